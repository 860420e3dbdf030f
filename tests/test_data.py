from pathlib import Path

import numpy as np
import pytest

from edgekit.data import bind_inputs, load_npz, split
from edgekit.errors import DataError


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_split_is_deterministic_disjoint_and_hashed(tmp_path: Path) -> None:
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    data = load_npz(_write(tmp_path / "d.npz", x=x, y=np.arange(100) % 3))
    a = split(data, calibration_size=30, eval_size=None, seed=0)
    b = split(data, calibration_size=30, eval_size=None, seed=0)
    c = split(data, calibration_size=30, eval_size=None, seed=1)
    assert a.sha256 == b.sha256 != c.sha256
    assert len(a.calibration) == 30 and len(a.evaluation) == 70
    calibration = set(a.calibration.inputs["x"][:, 0])
    evaluation = set(a.evaluation.inputs["x"][:, 0])
    assert not calibration & evaluation
    assert calibration | evaluation == set(x[:, 0])
    # labels travel with their samples
    assert np.array_equal(a.evaluation.y, a.evaluation.inputs["x"][:, 0].astype(int) % 3)


def test_calibration_never_takes_more_than_half(tmp_path: Path) -> None:
    data = load_npz(_write(tmp_path / "d.npz", x=np.zeros((10, 2), np.float32)))
    parts = split(data, calibration_size=256, eval_size=None, seed=0)
    assert len(parts.calibration) == 5 and len(parts.evaluation) == 5


def test_data_without_inputs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no input arrays"):
        load_npz(_write(tmp_path / "d.npz", y=np.zeros(3, np.int64)))


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)


def test_mismatched_sample_counts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="different numbers of samples"):
        load_npz(_write(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(3)))


def test_not_an_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_npz(path)


def test_bind_maps_x_to_single_input_and_names_mismatches(tmp_path: Path) -> None:
    data = load_npz(_write(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32)))
    assert list(bind_inputs(data, ["pixels"], "d.npz").inputs) == ["pixels"]
    with pytest.raises(DataError) as err:
        bind_inputs(data, ["input_ids", "attention_mask"], "d.npz")
    assert "'input_ids', 'attention_mask'" in err.value.message


def test_non_finite_values_are_refused_naming_the_array_and_sample(tmp_path: Path) -> None:
    x = np.zeros((10, 3), dtype=np.float32)
    x[7, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, x=x)
    with pytest.raises(DataError, match=r"'x' holds NaN \(first in sample 7; 1 sample"):
        load_npz(path)
    y = np.zeros(10, dtype=np.float32)
    y[2] = np.inf
    np.savez(path, x=np.zeros((10, 3), dtype=np.float32), y=y)
    with pytest.raises(DataError, match=r"'y' holds infinity \(first in sample 2"):
        load_npz(path)


def test_negative_class_labels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((4, 2), dtype=np.float32), y=np.array([0, 1, -1, 2]))
    with pytest.raises(DataError, match="sample 2 is -1"):
        load_npz(path)
