"""Does a fleet built on Ray match the one built on the local process pool, artifact for artifact?

    python benchmarks/bench_fleet.py                       # every sample x every shipped profile
    python benchmarks/bench_fleet.py --samples mlp tokens --targets jetson-orin-nano

One fleet file (the samples, targets ["all"] unless --targets), SOURCE_DATE_EPOCH fixed, three fleet builds
run as `edgekit fleet build` child processes, as a user would:

1. local:      --executor local, an empty cache A;
2. ray cold:   --executor ray, its own empty cache B: every candidate set built and timed again on Ray;
3. ray shared: --executor ray into a clean folder, sharing cache A (what a CI fleet with a kept cache does).

For each model x target x artifact it compares the recipe (the manifest's `variant`) and the sha256 of
"local" against each Ray build, and each model's release bundle (one throwaway key). Where a cold build chose
another recipe, both builds' latency ratios are printed: the choice follows timing, which a cold build measures
again (docs/reproducibility.md); where the recipe is the same the bytes must be the same. It exits 1 when
"ray shared" differs anywhere or "ray cold" gives other bytes for the same recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.edgekit_cli import EPOCH, edgekit  # noqa: E402

SAMPLES = ("mlp", "cnn", "mobilenet", "transformer", "tokens")


def fleet_file(samples: list[str], targets: list[str], scratch: Path) -> Path:
    lines = [f"output = {json.dumps(str(scratch / 'unused'))}", f"targets = {json.dumps(targets)}"]
    for sample in samples:
        config = ROOT / "sample_models" / sample / "edgekit.toml"
        lines += ["", "[[models]]", f"config = {json.dumps(str(config))}"]
    path = scratch / "fleet.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_fleet(fleet: Path, output: Path, cache: Path, executor: str, env: dict[str, str]) -> tuple[float, dict]:
    started = time.perf_counter()
    edgekit("fleet", "build", fleet, "-o", output, "--cache", cache, "--executor", executor, env=env)
    return time.perf_counter() - started, json.loads((output / "fleet.json").read_text())


def shipped(output: Path, log: dict) -> dict[tuple[str, str], dict]:
    """(model, artifact path) -> the manifest entry, for every model whose build wrote a manifest."""
    entries = {}
    for model in log["models"]:
        if model["manifest"] is None:
            continue
        manifest = json.loads((output / model["manifest"]).read_text())
        for entry in manifest["artifacts"]:
            entries[(model["name"], entry["path"])] = entry
    return entries


def bundles(output: Path, log: dict, key: Path, env: dict[str, str]) -> dict[str, str]:
    """Bundle file name -> sha256 over every model of the fleet."""
    hashes = {}
    for model in log["models"]:
        if model["manifest"] is None:
            continue
        folder = output / f"{model['name']}-bundles"
        edgekit("bundle", output / model["name"], "--key", key, "--version", "1.0.0", "-o", folder, env=env)
        hashes |= {f"{model['name']}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(folder.glob("*.tar.gz"))}
    return hashes


def ratio(entry: dict) -> str:
    value = entry["metrics"].get("latency_vs_fp32")
    return "—" if value is None else f"{value:.3f}x"


def compare(local: dict, other: dict, label: str) -> tuple[int, int, int]:
    """Print every difference; (same bytes, other recipe chosen, same recipe but other bytes or missing)."""
    same = recipe_differs = bytes_differ = 0
    for key in sorted(set(local) | set(other)):
        mine, theirs = local.get(key), other.get(key)
        name = f"{key[0]}/{key[1]}"
        if mine is None or theirs is None:
            bytes_differ += 1
            print(f"  {label}: {name} only in {'local' if theirs is None else label}")
        elif mine["sha256"] == theirs["sha256"]:
            same += 1
        elif mine["variant"] != theirs["variant"]:
            recipe_differs += 1
            print(f"  {label}: {name} recipe {mine['variant']} ({ratio(mine)}) locally, "
                  f"{theirs['variant']} ({ratio(theirs)}) on Ray")
        else:
            bytes_differ += 1
            print(f"  {label}: {name} recipe {mine['variant']}: sha256 {mine['sha256'][:12]} locally, "
                  f"{theirs['sha256'][:12]} on Ray")
    return same, recipe_differs, bytes_differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="+", default=list(SAMPLES), choices=SAMPLES)
    parser.add_argument("--targets", nargs="+", default=["all"], help="profile names; default: every shipped one")
    parser.add_argument("--keep", type=Path, help="copy the three fleet folders here (each candidate's report.json "
                                                  "lists every candidate's latency ratio)")
    args = parser.parse_args()
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    env.pop("EDGEKIT_NO_CACHE", None)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-fleet-") as folder:
        scratch = Path(folder)
        fleet = fleet_file(args.samples, args.targets, scratch)
        edgekit("keygen", "-o", scratch / "keys", "--no-encrypt", env=env)
        key = scratch / "keys" / "edgekit.key"
        builds = {}
        for label, executor, cache in (("local", "local", "a"), ("ray cold", "ray", "b"), ("ray shared", "ray", "a")):
            output = scratch / label.replace(" ", "-")
            seconds, log = timed_fleet(fleet, output, scratch / f"cache-{cache}", executor, env)
            sets = sum(m["candidate_sets"]["built"] for m in log["models"])
            cached = sum(m["candidate_sets"]["from_cache"] for m in log["models"])
            print(f"{label:<10} {seconds:7.1f} s  exit {log['exit_code']}  candidate sets built {sets}, "
                  f"from cache {cached}", flush=True)
            builds[label] = (shipped(output, log), bundles(output, log, key, env))
        local_entries, local_bundles = builds["local"]
        print(f"{len(local_entries)} artifacts, {len(local_bundles)} bundles in the local build")
        failed = False
        for label in ("ray cold", "ray shared"):
            entries, bundle_hashes = builds[label]
            same, recipe_differs, bytes_differ = compare(local_entries, entries, label)
            same_bundles = sum(local_bundles.get(name) == sha for name, sha in bundle_hashes.items())
            # A cold build's manifest carries its own timings, so its bundles differ even with every artifact equal.
            note = "" if label == "ray shared" else " (its manifests carry its own measurements)"
            print(f"{label}: {same}/{len(local_entries)} artifacts identical, {recipe_differs} with another recipe "
                  f"chosen, {bytes_differ} with the same recipe but other bytes or missing; "
                  f"bundles identical {same_bundles}/{len(local_bundles)}{note}", flush=True)
            failed |= bytes_differ > 0 or (label == "ray shared" and (recipe_differs > 0
                                                                       or same_bundles != len(local_bundles)))
        if args.keep:
            for label in builds:
                shutil.copytree(scratch / label.replace(" ", "-"), args.keep / label.replace(" ", "-"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
