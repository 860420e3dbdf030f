"""Train the digits-cnn sample; run from the repo root: ``python -m sample_models.cnn.train``.

Writes ``cnn/weights.safetensors`` and prints the holdout accuracy.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.cnn.model import create
from sample_models.training import DATA_DIR, TrainConfig, random_shift, train_sample

HERE = Path(__file__).resolve().parent
CONFIG = TrainConfig(epochs=60, lr=3e-3, weight_decay=5e-4, label_smoothing=0.05, patience=20)
# One-pixel shifts: the digits are roughly, not exactly, centred.
AUGMENT = random_shift(1)


def main() -> dict[str, float | int | str]:
    """Train, save ``weights.safetensors`` beside this file and return the run's summary."""
    return train_sample(
        "digits-cnn",
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
