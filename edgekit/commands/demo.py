"""`edgekit demo`: the main job on the shipped samples — build, validate, sign, bundle, verify."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from edgekit.commands.build import print_origins, run_build
from edgekit.commands.execution import execution, execution_options
from edgekit.commands.output import console, summary_table
from edgekit.errors import BudgetError, InputError

DEMO_VERSION = "1.0.0"


def samples_root() -> Path:
    """Samples ship in the source tree beside the package, not in the wheel."""
    return Path(__file__).resolve().parents[2] / "sample_models"


def _sample_configs(names: tuple[str, ...]) -> list[Path]:
    root = samples_root()
    configs = sorted(root.glob("*/edgekit.toml"))
    if not configs:
        raise InputError(f"no sample models found under {root}", "Run the demo from an edgekit source checkout")
    if names:
        known = {c.parent.name for c in configs}
        unknown = sorted(set(names) - known)
        if unknown:
            raise InputError(f"unknown sample(s): {', '.join(unknown)}", f"Known samples: {', '.join(sorted(known))}")
        configs = [c for c in configs if c.parent.name in names]
    return configs


def _demo_key(folder: Path) -> tuple[Path, Path]:
    """A signing key for the demo's bundles, made once and reused."""
    from edgekit.release.signing import generate_keypair

    private, public = folder / "demo.key", folder / "demo.pub"
    if not private.exists():
        generate_keypair(folder, "demo")
    return private, public


def _bundle_and_verify(build_dir: Path, targets: list[str], private: Path, public: Path) -> list[dict[str, Any]]:
    """Bundle ``targets`` (those that met their budgets), then verify each bundle as a device would."""
    from edgekit.release.bundle import ReleaseOptions, bundle_build
    from edgekit.release.signing import load_private_key, load_public_key
    from edgekit.release.timestamps import release_epoch
    from edgekit.release.verify import verify_bundle

    options = ReleaseOptions(version=DEMO_VERSION, issued_at=release_epoch(), channel="demo")
    # The demo rebuilds its samples each run, so its demo-version bundles are replaced on purpose.
    results = bundle_build(build_dir, load_private_key(private), options, build_dir / "bundles", targets=targets,
                           replace=True)
    rows = []
    for result in results:
        with tempfile.TemporaryDirectory() as scratch:
            verified = verify_bundle(result.path, load_public_key(public), Path(scratch) / "unpacked")
        rows.append({**result.as_dict(), "verified_key_id": verified.key_id[:16]})
    return rows


@click.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("build"), show_default=True)
@click.option("--sample", "samples", multiple=True, help="Sample to build (default: all).")
@click.option("--target", "-t", "targets", multiple=True, help="Override the samples' targets.")
@click.option("--no-bundle", is_flag=True, help="Build and validate only.")
@execution_options
def demo(output: Path, samples: tuple[str, ...], targets: tuple[str, ...], no_bundle: bool, cache_dir: Path | None,
         no_cache: bool, executor: str | None, address: str | None, workers: int | None) -> None:
    """Build, validate, bundle and verify every shipped sample model.

    Candidate sets build on the executor and go to the cache like `edgekit build`'s
    (a local process pool and ~/.cache/edgekit by default), so a second demo reuses them.
    """
    configs = _sample_configs(samples)
    worst = 0
    keys = None if no_bundle else _demo_key(output / "keys")
    with execution(cache_dir, no_cache, executor, address, workers) as (cache, runner):
        for config in configs:
            console().rule(f"[bold]{config.parent.name}")
            result = run_build(str(config), None, list(targets), output / config.parent.name, cache=cache,
                               executor=runner)
            console().print(summary_table(result.manifest))
            for target in result.manifest["targets"]:
                for message in target["messages"]:
                    console().print(f"[yellow]{target['name']}[/]: {message}")
            print_origins(result.output)
            passed = [t["name"] for t in result.manifest["targets"] if t["status"] == "passed"]
            if keys is not None and passed:
                for row in _bundle_and_verify(result.output, passed, *keys):
                    console().print(f"bundle {row['path']} ({row['size_bytes'] / 1024:.1f} KB, {row['artifacts']} "
                                    f"artifacts): signature and every hash verified")
            worst = max(worst, result.exit_code)
    console().print(f"artifacts, manifests and bundles: {output}/<sample>/; demo key pair: {output}/keys/")
    if worst == 1:
        raise BudgetError("at least one sample artifact misses its target's budgets", "See the summaries above")
    if worst:
        sys.exit(worst)


COMMANDS = [demo]
