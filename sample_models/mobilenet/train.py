"""Train the digits-mobilenet sample; run from the repo root: ``python -m sample_models.mobilenet.train``.

Writes ``mobilenet/weights.safetensors`` and prints the holdout accuracy.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.mobilenet.model import create
from sample_models.training import DATA_DIR, TrainConfig, random_shift, train_sample

HERE = Path(__file__).resolve().parent
CONFIG = TrainConfig(epochs=25, lr=3e-3, weight_decay=1e-4, warmup_epochs=2, label_smoothing=0.05, patience=10)
# Four-pixel shifts of the 32x32 images are one-pixel shifts of the 8x8 originals.
AUGMENT = random_shift(4)


def main() -> dict[str, float | int | str]:
    """Train, save ``weights.safetensors`` beside this file and return the run's summary."""
    return train_sample(
        "digits-mobilenet",
        create,
        train_path=DATA_DIR / "digits32_train.npz",
        holdout_path=DATA_DIR / "digits32_holdout.npz",
        input_names=("x",),
        weights_path=HERE / "weights.safetensors",
        config=CONFIG,
        augment=AUGMENT,
    )


if __name__ == "__main__":
    main()
