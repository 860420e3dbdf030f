"""Build every sample and compare each artifact with its FP32 ONNX artifact, measured in one run.

    python benchmarks/bench_artifacts.py [--sample cnn] [--target NAME] [--runs 300]

For every sample: build for the targets (default: jetson-orin-nano, which
asks for ONNX FP32/FP16/INT8/INT4, plus each sample's own targets), then
re-time every artifact round-robin on this host (batch 1, one thread) so that
all numbers come from the same conditions, and print size and p50 latency as
ratios to the FP32 ONNX artifact of the same sample.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.backends import open_session  # noqa: E402
from edgekit.config import load_build_config  # noqa: E402
from edgekit.data import bind_inputs, load_npz  # noqa: E402
from edgekit.pipeline import Build, resolve_inputs  # noqa: E402


def interleaved_p50(paths: list[Path], feeds: dict[str, np.ndarray], runs: int) -> dict[Path, float]:
    """p50 latency in ms per artifact, timing them round-robin so drift hits all alike."""
    sessions = {p: open_session(p) for p in paths}
    for session in sessions.values():
        for _ in range(20):
            session.run(feeds)
    times: dict[Path, list[float]] = {p: [] for p in paths}
    for _ in range(runs):
        for path, session in sessions.items():
            timer = getattr(session, "time_runs", None)
            if timer is not None:
                times[path].extend(timer(feeds, 1, 0))
                continue
            start = time.perf_counter()
            session.run(feeds)
            times[path].append(time.perf_counter() - start)
    return {p: statistics.median(t) * 1e3 for p, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", action="append", help="sample folder name (repeatable; default all)")
    parser.add_argument("--target", action="append", help="targets (default: jetson-orin-nano + the sample's own)")
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    configs = sorted((ROOT / "sample_models").glob("*/edgekit.toml"))
    if args.sample:
        configs = [c for c in configs if c.parent.name in args.sample]
    header = f"{'sample':<12} {'target':<18} {'artifact':<22} {'variant':<22} {'size KB':>9} {'size×':>7} {'p50 ms':>8} {'latency×':>9} {'acc':>7}"
    print(header)
    print("-" * len(header))
    for config_path in configs:
        config = load_build_config(config_path)
        targets = args.target or list(dict.fromkeys(["jetson-orin-nano", *config.build.targets]))
        with tempfile.TemporaryDirectory() as tmp:
            inputs = resolve_inputs(config, targets, None, Path(tmp))
            manifest = Build(inputs).run().manifest
            artifacts = manifest["artifacts"]
            baseline = next((a for a in artifacts if a["format"] == "onnx" and a["precision"] == "fp32"), None)
            if baseline is None:
                print(f"{config_path.parent.name}: no FP32 ONNX artifact to compare with; add jetson-orin-nano")
                continue
            data = load_npz(inputs.data_path)
            first = open_session(Path(tmp) / baseline["path"])
            dataset = bind_inputs(data, [s.name for s in first.inputs], str(inputs.data_path))
            feeds = {k: v[:1] for k, v in dataset.inputs.items()}
            unique = {a["sha256"]: a for a in artifacts}  # targets sharing an artifact are timed once
            paths = [Path(tmp) / a["path"] for a in unique.values()]
            p50 = interleaved_p50(paths, feeds, args.runs)
            base_latency = p50[Path(tmp) / unique[baseline["sha256"]]["path"]]  # targets may share its bytes
            for artifact in sorted(artifacts, key=lambda a: (a["target"], a["format"], a["precision"])):
                path = Path(tmp) / artifact["path"]
                latency = p50.get(path) or p50[Path(tmp) / unique[artifact["sha256"]]["path"]]
                accuracy = artifact["metrics"].get("accuracy")
                print(
                    f"{config_path.parent.name:<12} {artifact['target']:<18} "
                    f"{artifact['format'] + ' ' + artifact['precision']:<22} {artifact['variant']:<22} "
                    f"{artifact['size_bytes'] / 1024:>9.1f} {artifact['size_bytes'] / baseline['size_bytes']:>7.2f} "
                    f"{latency:>8.3f} {latency / base_latency:>9.2f} "
                    f"{'' if accuracy is None else f'{accuracy:.4f}':>7}"
                )
            for target in manifest["targets"]:
                for message in target["messages"]:
                    print(f"{'':<12} {target['name']:<18} note: {message[:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
