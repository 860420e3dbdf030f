"""Regenerate the data and retrain every sample: ``python -m sample_models.train_all`` (from the repo root).

Options: ``--only cnn mlp`` retrains a subset; ``--skip-data`` keeps the
committed ``.npz`` files (regenerating them needs scikit-learn, and yields
byte-identical files anyway).
"""

from __future__ import annotations

import argparse
import importlib
import time

SAMPLES = ("cnn", "mlp", "transformer", "mobilenet", "tokens")


def main(argv: list[str] | None = None) -> list[dict[str, float | int | str]]:
    """Run the data script and each sample's ``train.main()``; print a summary table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SAMPLES, default=list(SAMPLES), help="samples to retrain")
    parser.add_argument("--skip-data", action="store_true", help="do not regenerate sample_models/data/*.npz")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if not args.skip_data:
        from sample_models.data import make_digits

        make_digits.main()
    summaries = []
    for sample in args.only:
        # Imported lazily so that one sample's import error names that sample.
        train = importlib.import_module(f"sample_models.{sample}.train")
        summaries.append(train.main())

    print(f"\n{'sample':<20}{'params':>10}{'MACs':>13}{'holdout acc':>13}{'train s':>9}")
    for s in summaries:
        print(f"{s['name']:<20}{s['params']:>10,}{s['macs']:>13,}{s['holdout_accuracy']:>13.4f}{s['train_seconds']:>9}")
    print(f"total {time.perf_counter() - started:.0f}s")
    return summaries


if __name__ == "__main__":
    main()
