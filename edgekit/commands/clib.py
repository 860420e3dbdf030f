"""`edgekit export-c`: a microcontroller model as the C/C++ library TFLite Micro firmware compiles in.

Device-side tooling: it reads the flatbuffer and runs TFLite Micro (to measure
the arena), never torch or a converter.
"""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands.output import console, emit_json


@click.command("export-c")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder to write the library into (created if needed; other files in it are left alone).")
@click.option("--name", default=None,
              help="C identifier that prefixes the files, the array g_NAME and the C++ namespace "
                   "[default: from MODEL's file name].")
@click.option("--arena-bytes", type=click.IntRange(min=1), default=None,
              help="Tensor arena size to write, instead of measuring it in TFLite Micro.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def export_c(model: Path, out_dir: Path, name: str | None, arena_bytes: int | None, as_json: bool) -> None:
    """Write MODEL (a full-integer .tflite) as a C/C++ library for TFLite Micro.

    \b
    The library: the model as an aligned C array, a header with the input and
    output shapes, scales and zero points and the measured tensor arena, an op
    resolver that registers exactly the model's ops, and an example main.cc.
    """
    from edgekit.backends.tflite.clib import default_name, write_c_library

    library = write_c_library(
        model, out_dir, name or default_name(model), arena_bytes=arena_bytes,
        arena_method="given with --arena-bytes" if arena_bytes is not None else None,
    )
    if as_json:
        emit_json(library.as_dict())
        return
    out = console()
    out.print(f"wrote [bold]{library.folder}[/]: {', '.join(p.name for p in library.files)}")
    out.print(f"array {library.array} ({library.array}_len), namespace {library.name}")
    out.print(f"ops ({len(library.ops)}): {', '.join(library.ops)}")
    out.print(f"tensor arena: {library.arena_bytes} bytes ({library.arena_method})")


COMMANDS = [export_c]
