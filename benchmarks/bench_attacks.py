"""What do the attack checks cost a build? Each sample built with [attacks] on and off, in the same run.

    python benchmarks/bench_attacks.py                       # every shipped sample, one round
    python benchmarks/bench_attacks.py --samples mlp cnn --rounds 3
    python benchmarks/bench_attacks.py --samples --zoo mobilenet_v2 gru   # real-size zoo models, one target

Each round builds the sample's own config (its targets) twice into fresh
folders, once with ``[attacks] enabled = false`` (the baseline) and once
with the defaults (FGSM + PGD at three eps, two corruptions, membership
inference), alternating which goes first from round to round. On a shared
2-core host whole builds vary by +-40 % from run to run (timing rounds,
searches), far more than the checks cost, so the verdict uses what the
build with attacks measured itself (OUT/build.json: crafting and every
artifact's runs, timed inside the build): overhead = attack seconds /
(build seconds - attack seconds). The on/off wall-clock ratio is printed
beside it as a cross-check. ``--zoo`` does the same for real-size models of
benchmarks/zoo (made once into its cache) for ``--target`` (default
raspberry-pi-4), where crafting is bounded by its MAC budget. Prints the median build time of each and the overhead
(on / off - 1); the target is at most +30 %. Also prints what the attack
suite found for the FP32 model, so a run shows the checks did their work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.config import AttacksSection, load_build_config  # noqa: E402
from edgekit.pipeline import Build, resolve_inputs  # noqa: E402

SAMPLES = ("mlp", "cnn", "mobilenet", "transformer", "tokens")
TARGET_OVERHEAD = 0.30


def config_path(subject: str) -> Path:
    """A sample's edgekit.toml, or for "zoo:NAME" the zoo model's config (made into the zoo cache when missing)."""
    if not subject.startswith("zoo:"):
        return ROOT / "sample_models" / subject / "edgekit.toml"
    from benchmarks.zoo.prepare import prepare

    return Path(prepare(subject.removeprefix("zoo:")).config)


def attack_share(output: Path) -> float:
    """What the attack checks added to this build, from its own log: attack seconds over the rest."""
    log = json.loads((output / "build.json").read_text())
    spent = log["attacks_seconds"]["craft"] + log["attacks_seconds"]["runs"]
    return spent / (log["seconds"] - spent)


def build_seconds(subject: str, attacks: bool, output: Path, targets: list[str]) -> tuple[float, dict]:
    config = load_build_config(config_path(subject))
    if not attacks:
        config = config.model_copy(update={"attacks": AttacksSection(enabled=False)})
    inputs = resolve_inputs(config, targets, None, output)
    start = time.perf_counter()
    result = Build(inputs).run()
    return time.perf_counter() - start, result.manifest


def fp32_summary(manifest: dict) -> str:
    fp32 = manifest.get("attacks", {}).get("fp32", {})
    parts = []
    if "robustness" in fp32:
        robustness = fp32["robustness"]
        parts.append(f"FP32 clean {robustness['clean_accuracy']:.3f} robust {robustness['robust_accuracy']:.3f}")
    parts.append(f"{manifest.get('attacks', {}).get('samples')} samples")
    if "membership" in fp32:
        low, high = fp32["membership"]["auc_ci95"]
        parts.append(f"membership AUC {fp32['membership']['auc']:.3f} [{low:.3f}, {high:.3f}]")
    return "; ".join(parts) or "nothing measured"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", nargs="*", default=list(SAMPLES), choices=SAMPLES)
    parser.add_argument("--zoo", nargs="*", default=[], help="zoo models (benchmarks/zoo), e.g. mobilenet_v2 gru")
    parser.add_argument("--target", default="raspberry-pi-4", help="the zoo models' target")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    subjects = [(s, []) for s in args.samples] + [(f"zoo:{z}", [args.target]) for z in args.zoo]
    print(f"{'model':<18} {'off s':>8} {'on s':>8} {'on/off':>8} {'measured':>9}  within +{TARGET_OVERHEAD:.0%}  "
          "what FP32 showed")
    worst = 0.0
    for sample, targets in subjects:
        times: dict[bool, list[float]] = {False: [], True: []}
        shares: list[float] = []
        manifest: dict = {}
        with tempfile.TemporaryDirectory(prefix="edgekit-bench-attacks-") as scratch:
            for round_ in range(args.rounds):
                for attacks in ((False, True) if round_ % 2 == 0 else (True, False)):
                    folder = Path(scratch) / f"{sample.replace(':', '-')}-{attacks}-{round_}"
                    seconds, made = build_seconds(sample, attacks, folder, targets)
                    times[attacks].append(seconds)
                    if attacks:
                        manifest = made
                        shares.append(attack_share(folder))
        off, on = statistics.median(times[False]), statistics.median(times[True])
        overhead = statistics.median(shares)
        worst = max(worst, overhead)
        print(f"{sample:<18} {off:8.1f} {on:8.1f} {on / off - 1:+8.1%} {overhead:+9.1%}  "
              f"{'yes' if overhead <= TARGET_OVERHEAD else 'NO':<13}{fp32_summary(manifest)}", flush=True)
    print(f"worst overhead {worst:+.1%} (target <= +{TARGET_OVERHEAD:.0%})")
    return 0 if worst <= TARGET_OVERHEAD else 1


if __name__ == "__main__":
    sys.exit(main())
