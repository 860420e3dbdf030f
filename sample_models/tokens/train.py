"""Train the digits-tokens sample; run from the repo root: ``python -m sample_models.tokens.train``.

Writes ``tokens/weights.safetensors`` and prints the holdout accuracy.
"""

from __future__ import annotations

from pathlib import Path

from sample_models.tokens.model import create
from sample_models.training import DATA_DIR, TrainConfig, train_sample

HERE = Path(__file__).resolve().parent
# patience = epochs: the whole cosine schedule runs and the best validation
# epoch is kept. With early stopping, a lucky high-LR epoch on the small
# validation slice ended training before the LR had decayed.
CONFIG = TrainConfig(epochs=80, lr=2e-3, weight_decay=0.05, warmup_epochs=5, label_smoothing=0.05, patience=80)


def main() -> dict[str, float | int | str]:
    """Train, save ``weights.safetensors`` beside this file and return the run's summary."""
    return train_sample(
        "digits-tokens",
        create,
        train_path=DATA_DIR / "tokens_train.npz",
        holdout_path=DATA_DIR / "tokens_holdout.npz",
        input_names=("input_ids", "attention_mask"),
        weights_path=HERE / "weights.safetensors",
        config=CONFIG,
        augment=None,
    )


if __name__ == "__main__":
    main()
