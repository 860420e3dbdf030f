"""Datasets from ``.npz`` files, and the deterministic calibration/evaluation split.

An ``.npz`` holds either ``x`` (single-input models) or one array per model
input, named after the input, plus an optional ``y`` (labels or regression
targets). The first axis of every array is the sample axis. No torch here.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.artifact import sha256_file
from edgekit.errors import DataError

LABEL_KEY = "y"
SINGLE_INPUT_KEY = "x"


@dataclass(frozen=True)
class Dataset:
    """Named input arrays (same first dimension) and optional targets ``y``."""

    inputs: dict[str, np.ndarray]
    y: np.ndarray | None
    source: Path | None = None
    sha256: str | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def labelled(self) -> bool:
        """True when ``y`` holds integer class labels (classification)."""
        return self.y is not None and np.issubdtype(self.y.dtype, np.integer)

    def take(self, indices: np.ndarray) -> Dataset:
        return Dataset(
            {k: v[indices] for k, v in self.inputs.items()},
            None if self.y is None else self.y[indices],
            self.source,
            self.sha256,
        )

    def batches(self, size: int) -> list[dict[str, np.ndarray]]:
        """The inputs cut into consecutive batches of at most ``size`` samples."""
        return [{k: v[i : i + size] for k, v in self.inputs.items()} for i in range(0, len(self), size)]


@dataclass(frozen=True)
class Split:
    """Calibration and evaluation sets, disjoint, with a hash that identifies the split."""

    calibration: Dataset
    evaluation: Dataset
    seed: int
    sha256: str


def load_npz(path: Path) -> Dataset:
    """Load an ``.npz`` dataset, refusing pickles, ragged arrays and missing inputs."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}", "Check the path given to --data or [data] path")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({exc})",
            "Save data with numpy.savez(path, x=..., y=...) using plain numeric arrays",
        ) from None
    inputs = {k: v for k, v in arrays.items() if k != LABEL_KEY}
    if not inputs:
        raise DataError(
            f"{path} has no input arrays (found: {', '.join(arrays) or 'nothing'})",
            "Store the inputs as 'x', or one array per model input named after the input",
        )
    lengths = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(
            f"{path}: arrays have different numbers of samples ({lengths})",
            "Every array's first axis must be the sample axis, with the same length",
        )
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            raise DataError(f"{path}: array '{name}' has dtype {array.dtype}", "Use numeric arrays (float, int or bool)")
        _refuse_non_finite(path, name, array)
    labels = arrays.get(LABEL_KEY)
    if labels is not None and labels.dtype.kind in "iu" and labels.size and labels.min() < 0:
        first = int(np.flatnonzero(labels.reshape(len(labels), -1).min(axis=1) < 0)[0])
        raise DataError(f"{path}: label 'y' of sample {first} is {labels.reshape(len(labels), -1)[first].min()}, "
                        "below 0", "Class labels are 0 .. classes-1; fix or drop that sample")
    return Dataset(inputs, labels, path, sha256_file(path))


def _refuse_non_finite(path: Path, name: str, array: np.ndarray) -> None:
    """NaN or infinity would run through every converter and only show as a failed metric much later."""
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        what = "NaN" if np.isnan(array[first]).any() else "infinity"
        raise DataError(f"{path}: array '{name}' holds {what} (first in sample {first}; {int(bad.sum())} sample(s) "
                        "affected)", "Remove or repair those samples; edgekit needs finite numbers")


def split(dataset: Dataset, calibration_size: int, eval_size: int | None, seed: int) -> Split:
    """Split deterministically: a seeded permutation; the first part calibrates, the rest evaluates.

    The split's hash covers the data file's hash, the seed and the chosen
    indices, so a manifest pins exactly which samples measured an artifact.
    """
    count = len(dataset)
    if count < 2:
        raise DataError(f"the data has {count} sample(s)", "Give at least 2 samples: some to calibrate, some to evaluate")
    calibration_size = min(calibration_size, count // 2)
    order = np.random.default_rng(seed).permutation(count)
    calibration_idx = np.sort(order[:calibration_size])
    rest = order[calibration_size:]
    evaluation_idx = np.sort(rest if eval_size is None else rest[:eval_size])
    digest = hashlib.sha256()
    digest.update((dataset.sha256 or "").encode())
    digest.update(str(seed).encode())
    digest.update(calibration_idx.astype("<i8").tobytes())
    digest.update(b"|")
    digest.update(evaluation_idx.astype("<i8").tobytes())
    return Split(dataset.take(calibration_idx), dataset.take(evaluation_idx), seed, digest.hexdigest())


def bind_inputs(dataset: Dataset, input_names: list[str], source: str) -> Dataset:
    """Rename the dataset's arrays to the model's input names, or explain the mismatch.

    ``x`` binds to a single-input model whatever the input is called.
    """
    names = list(dataset.inputs)
    if names == [SINGLE_INPUT_KEY] and len(input_names) == 1:
        return Dataset({input_names[0]: dataset.inputs[SINGLE_INPUT_KEY]}, dataset.y, dataset.source, dataset.sha256)
    missing = [n for n in input_names if n not in dataset.inputs]
    extra = [n for n in names if n not in input_names]
    if missing or extra:
        want = "'x'" if len(input_names) == 1 else "arrays named " + ", ".join(f"'{n}'" for n in input_names)
        raise DataError(
            f"{source} holds {', '.join(repr(n) for n in names)} but the model's inputs are "
            f"{', '.join(repr(n) for n in input_names)}",
            f"Store {want} (plus optional 'y') in the .npz",
        )
    return Dataset({n: dataset.inputs[n] for n in input_names}, dataset.y, dataset.source, dataset.sha256)
