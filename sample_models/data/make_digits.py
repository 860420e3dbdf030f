"""Create the digits ``.npz`` files every sample trains and is evaluated on.

Run from the repo root::

    python -m sample_models.data.make_digits

The source is scikit-learn's bundled copy of the UCI handwritten digits (1797
images, 8x8, pixel values 0..16, 10 classes); loading it reads a file inside
the sklearn package and never touches the network. scikit-learn is a
development-only dependency: the generated files are committed, so edgekit and
the training scripts only ever read the ``.npz`` files.

Files (``train`` is a fixed, stratified ~70% split with seed 0; ``holdout``
is the remaining ~30% and is never used for training):

- ``digits_{train,holdout}.npz``: ``x`` float32 (N, 1, 8, 8) in [0, 1], ``y`` int64.
- ``digits32_{train,holdout}.npz``: the same images bilinearly upscaled to
  (N, 1, 32, 32) float32, for the MobileNet sample.
- ``tokens_{train,holdout}.npz``: ``input_ids`` int64 (N, 64), ``attention_mask``
  int64 (N, 64), ``y`` int64. Each image becomes 64 tokens (its pixel values
  0..16, row-major); every sequence is cut to a seeded random length in
  [48, 64] and the rest is padded with ``PAD`` (mask 0), so the mask matters.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_DIR = Path(__file__).resolve().parent
SEED = 0
HOLDOUT_FRACTION = 0.3
IMAGE_SIZE_32 = 32
SEQ_LEN = 64
MIN_LEN = 48
PAD = 17  # pixel values use token ids 0..16
VOCAB_SIZE = 18


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a compressed ``.npz`` whose bytes depend only on the arrays.

    ``np.savez_compressed`` stamps each member with the current time, so
    regenerating identical data would still change the committed files.
    Fixing the timestamp keeps reruns byte-identical; ``np.load`` reads the
    result like any other ``.npz``.
    """
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)
    tmp.replace(path)  # atomic: a crash never leaves a half-written data file


def split_indices(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/holdout indices, fixed by ``SEED``, each sorted."""
    from sklearn.model_selection import train_test_split  # dev-only dependency

    train_idx, holdout_idx = train_test_split(
        np.arange(len(y)), test_size=HOLDOUT_FRACTION, stratify=y, random_state=SEED
    )
    return np.sort(train_idx), np.sort(holdout_idx)


def upscale(x: np.ndarray, size: int = IMAGE_SIZE_32) -> np.ndarray:
    """Bilinear upscaling of (N, 1, 8, 8) images to (N, 1, size, size), float32."""
    with torch.no_grad():
        big = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return big.numpy().astype(np.float32)


def tokenize(pixels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Turn (N, 8, 8) integer pixels into padded token ids and an attention mask.

    Each sequence keeps a random prefix of length in [MIN_LEN, SEQ_LEN]; the
    rest becomes PAD with mask 0.
    """
    ids = pixels.reshape(len(pixels), SEQ_LEN).astype(np.int64)
    lengths = rng.integers(MIN_LEN, SEQ_LEN + 1, size=len(ids))
    mask = (np.arange(SEQ_LEN)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, PAD).astype(np.int64)
    return ids, mask


def main(out_dir: Path = DATA_DIR) -> None:
    """Regenerate every data file in ``out_dir``."""
    from sklearn.datasets import load_digits  # dev-only dependency; bundled data, no download

    digits = load_digits()
    pixels = np.rint(digits.images).astype(np.int64)  # (1797, 8, 8), values 0..16
    y = digits.target.astype(np.int64)
    x = (pixels.astype(np.float32) / 16.0)[:, None, :, :]

    train_idx, holdout_idx = split_indices(y)
    # One generator for the whole file, drawn in a fixed order, so the
    # truncation lengths are reproducible.
    rng = np.random.default_rng(SEED)
    for part, idx in (("train", train_idx), ("holdout", holdout_idx)):
        save_npz(out_dir / f"digits_{part}.npz", x=x[idx], y=y[idx])
        save_npz(out_dir / f"digits32_{part}.npz", x=upscale(x[idx]), y=y[idx])
        input_ids, attention_mask = tokenize(pixels[idx], rng)
        save_npz(out_dir / f"tokens_{part}.npz", input_ids=input_ids, attention_mask=attention_mask, y=y[idx])
        print(f"{part}: {len(idx)} samples, class counts {np.bincount(y[idx], minlength=10).tolist()}")


if __name__ == "__main__":
    main()
