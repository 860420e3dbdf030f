"""What does the build cache buy, and does it keep releases byte-identical? Every sample, in one run.

    python benchmarks/bench_cache.py                         # every sample, second build on Ray
    python benchmarks/bench_cache.py --samples mlp cnn --second-executor local

Per sample, with one fresh cache folder and SOURCE_DATE_EPOCH fixed:

1. cold:    the sample's own config (its targets), --executor local, an empty cache;
2. again:   the same build into a clean folder, --executor ray (or --second-executor), same cache;
3. changed: one profile changed (the first target's max_size_mb budget tightened, and its
            artifact list replaced by an ONNX dynamic-int8 request no target made) into a clean
            folder, serial.

It prints the wall time of each, the speed-up of "changed" over "cold" (target: at least 5x),
how many candidate sets each took from the cache (OUT/build.json), and whether every
artifact's sha256 and every bundle's sha256 (signed with one throwaway key) are identical
between "cold" and "again". Builds run as `edgekit` child processes, as a user would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.edgekit_cli import EPOCH, edgekit  # noqa: E402

SAMPLES = ("mlp", "cnn", "mobilenet", "transformer", "tokens")
TARGET_SPEEDUP = 5.0


def timed_build(config: Path, output: Path, cache: Path, executor: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    edgekit("build", config, "-o", output, "--cache", cache, "--executor", executor, env=env)
    seconds = time.perf_counter() - started
    return seconds, json.loads((output / "build.json").read_text())


def hashes(output: Path) -> dict[str, str]:
    manifest = json.loads((output / "manifest.json").read_text())
    return {a["path"]: a["sha256"] for a in manifest["artifacts"]}


def bundle_hashes(output: Path, key: Path, env: dict[str, str]) -> dict[str, str]:
    folder = output.parent / f"{output.name}-bundles"
    edgekit("bundle", output, "--key", key, "--version", "1.0.0", "-o", folder, env=env)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar.gz"))}


def changed_config(config: Path, scratch: Path) -> Path:
    """The sample's config with its first target's budgets tightened and one more artifact requested."""
    text = config.read_text()
    document = tomllib.loads(text)
    first = document["build"]["targets"][0]
    base = config.parent.resolve()
    absolute = text.replace('"../', f'"{base.parent}/').replace('"model.py:create"', f'"{base}/model.py:create"') \
        .replace('"weights.safetensors"', f'"{base}/weights.safetensors"')
    # A tighter size budget (no new build: budgets are judged on cached measurements) and one request
    # no target of the sample makes (one new candidate set).
    extra = (f'\n[overrides.{first}.budgets]\nmax_size_mb = 4.0\n'
             f'[[overrides.{first}.artifacts]]\nformat = "onnx"\nprecision = "dynamic-int8"\n')
    path = scratch / "changed.toml"
    path.write_text(absolute + extra)
    return path


def run_sample(sample: str, second: str, scratch: Path, key: Path, env: dict[str, str]) -> dict:
    config = ROOT / "sample_models" / sample / "edgekit.toml"
    cache = scratch / "cache"
    cold, log_cold = timed_build(config, scratch / "cold", cache, "local", env)
    again, log_again = timed_build(config, scratch / "again", cache, second, env)
    changed, log_changed = timed_build(changed_config(config, scratch), scratch / "changed", cache, "serial", env)
    return {
        "sample": sample, "cold_s": cold, "again_s": again, "changed_s": changed,
        "speedup": cold / changed, "again_from_cache": f"{log_again['from_cache']}/{log_again['from_cache'] + log_again['built']}",
        "changed_built": log_changed["built"],
        "artifacts_same": hashes(scratch / "cold") == hashes(scratch / "again"),
        "bundles_same": bundle_hashes(scratch / "cold", key, env) == bundle_hashes(scratch / "again", key, env),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=list(SAMPLES), choices=SAMPLES)
    parser.add_argument("--second-executor", default="ray", choices=("ray", "local", "serial"))
    args = parser.parse_args()
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    env.pop("EDGEKIT_NO_CACHE", None)
    print(f"{'sample':<12} {'cold s':>7} {'again s':>8} {'changed s':>10} {'speed-up':>9}  from cache  "
          f"changed built  same artifacts  same bundles")
    worst, all_same = float("inf"), True
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-cache-") as scratch:
        key = Path(scratch) / "keys"
        edgekit("keygen", "-o", key, "--no-encrypt", env=env)
        for sample in args.samples:
            folder = Path(scratch) / sample
            folder.mkdir()
            row = run_sample(sample, args.second_executor, folder, key / "edgekit.key", env)
            worst = min(worst, row["speedup"])
            all_same &= row["artifacts_same"] and row["bundles_same"]
            print(f"{sample:<12} {row['cold_s']:7.1f} {row['again_s']:8.1f} {row['changed_s']:10.1f} "
                  f"{row['speedup']:8.1f}x  {row['again_from_cache']:>10}  {row['changed_built']:>13}  "
                  f"{'yes' if row['artifacts_same'] else 'NO':>14}  {'yes' if row['bundles_same'] else 'NO':>12}",
                  flush=True)
    print(f"slowest one-profile rebuild: {worst:.1f}x faster than cold (target >= {TARGET_SPEEDUP:.0f}x); "
          f"artifacts and bundles identical: {'yes' if all_same else 'NO'}")
    return 0 if worst >= TARGET_SPEEDUP and all_same else 1


if __name__ == "__main__":
    sys.exit(main())
