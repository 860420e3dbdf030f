"""`edgekit inspect`: what is inside an artifact, read from its bytes."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.commands.output import console, emit_json


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def inspect(artifact: Path, as_json: bool) -> None:
    """Format, inputs/outputs, op histogram, parameters, size and quantization of ARTIFACT."""
    from edgekit.backends import detect_format, inspector

    report = inspector(detect_format(artifact)).inspect(artifact)
    if as_json:
        emit_json(report)
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{artifact}[/]  format {report['format']}  size {report['size_bytes'] / 1024:.1f} KB  "
              f"parameters {report['parameters']:,}  quantized: {'yes' if report['quantized'] else 'no'}")
    io = Table(title="inputs and outputs")
    for column in ("", "name", "shape", "dtype", "quantization"):
        io.add_column(column)
    for kind in ("inputs", "outputs"):
        for tensor in report[kind]:
            q = tensor.get("quantization")
            io.add_row(kind[:-1], tensor["name"], str(tensor["shape"]), tensor["dtype"],
                       "" if not q else f"scale {q['scale']:.6g} zero point {q['zero_point']}")
    out.print(io)
    weights = Table(title="weights by op and precision (elements)")
    weights.add_column("op")
    precisions = sorted(report["weights"]["by_precision"])
    for p in precisions:
        weights.add_column(p, justify="right")
    for op, counts in report["weights"]["by_op"].items():
        weights.add_row(op, *[f"{counts.get(p, 0):,}" for p in precisions])
    out.print(weights)
    out.print("ops: " + ", ".join(f"{op}×{n}" for op, n in report["ops"].items()))


COMMANDS = [inspect]
