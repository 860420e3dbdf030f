"""How long `edgekit --help` takes to start, against a bare `python -c pass`, measured in one run.

    python benchmarks/bench_startup.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _median_seconds(command: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    bare = _median_seconds([sys.executable, "-c", "pass"], args.repeat)
    cli = _median_seconds([sys.executable, "-m", "edgekit", "--help"], args.repeat)
    print(f"python -c pass      {bare * 1e3:8.1f} ms")
    print(f"edgekit --help      {cli * 1e3:8.1f} ms   ({cli / bare:.2f}x bare python, {(cli - bare) * 1e3:.1f} ms of edgekit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
