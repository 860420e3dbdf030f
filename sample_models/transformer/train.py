"""Train the digits-transformer sample; run from the repo root: ``python -m sample_models.transformer.train``.

Writes ``transformer/weights.safetensors`` and prints the holdout accuracy.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.transformer.model import create
from sample_models.training import DATA_DIR, TrainConfig, random_shift, train_sample

HERE = Path(__file__).resolve().parent
CONFIG = TrainConfig(epochs=150, lr=2e-3, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.05, patience=40)
# One-pixel shifts: the digits are roughly, not exactly, centred.
AUGMENT = random_shift(1)


def main() -> dict[str, float | int | str]:
    """Train, save ``weights.safetensors`` beside this file and return the run's summary."""
    return train_sample(
        "digits-transformer",
        create,
        train_path=DATA_DIR / "digits_train.npz",
        holdout_path=DATA_DIR / "digits_holdout.npz",
        input_names=("x",),
        weights_path=HERE / "weights.safetensors",
        config=CONFIG,
        augment=AUGMENT,
    )


if __name__ == "__main__":
    main()
