import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.data import load_npz
from edgekit.errors import DataError, ModelLoadError, SecurityError
from edgekit.model import load_factory, load_file, run_reference, sniff


class Affine(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


@pytest.fixture()
def affine() -> Affine:
    torch.manual_seed(0)
    return Affine().eval()


def test_torch_export_program_loads_with_input_names(tmp_path: Path, affine: Affine) -> None:
    program = torch.export.export(affine, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    path = tmp_path / "m.pt2"
    torch.export.save(program, path)
    loaded = load_file(path)
    assert loaded.kind == "exported" and loaded.input_names == ("features",)
    x = torch.randn(5, 4)
    assert torch.allclose(loaded.module(x), affine(x))


def test_torchscript_loads(tmp_path: Path, affine: Affine) -> None:
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(affine, torch.randn(2, 4)), path)
    loaded = load_file(path)
    assert loaded.kind == "torchscript" and loaded.input_names == ("features",)


def test_pickled_module_is_refused_unless_trusted(tmp_path: Path, affine: Affine) -> None:
    path = tmp_path / "m.pt"
    torch.save(affine, path)
    assert sniff(path) == "pickle"
    with pytest.raises(SecurityError) as err:
        load_file(path)
    assert "--trust-pickle" in err.value.message and err.value.exit_code == 2
    assert load_file(path, trust_pickle=True).kind == "pickle"


def test_corrupt_and_missing_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_file(tmp_path / "missing.pt2")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a model file"):
        load_file(garbage)


def test_truncated_export_is_a_clean_error(tmp_path: Path, affine: Affine) -> None:
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(affine, (torch.randn(2, 4),)), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError):
        load_file(path)


def test_factory_with_state_dict_and_safetensors(tmp_path: Path, tiny_cnn) -> None:
    from safetensors.torch import save_file

    loaded = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path)
    assert loaded.kind == "factory" and loaded.input_names == ("x",)
    st = tmp_path / "w.safetensors"
    save_file(loaded.module.state_dict(), st)
    again = load_factory(tiny_cnn.factory, st, tmp_path)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again.module(x), loaded.module(x))


def test_weights_that_do_not_match_the_factory(tmp_path: Path, tiny_cnn, affine: Affine) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save(affine.state_dict(), wrong)
    with pytest.raises(ModelLoadError) as err:
        load_factory(tiny_cnn.factory, wrong, tmp_path)
    assert "do not match" in err.value.message and "linear.weight" in err.value.message


def test_factory_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="module:function"):
        load_factory("no_colon", None, tmp_path)
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_factory("no_such_module_xyz:create", None, tmp_path)


def test_a_factory_package_beside_the_user_is_found_without_pythonpath(tmp_path: Path, tiny_cnn) -> None:
    package = tmp_path / "readme_pkg_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text((tiny_cnn.folder / "model.py").read_text())
    loaded = load_factory("readme_pkg_models.models:create", tiny_cnn.weights, tmp_path)
    assert loaded.input_names == ("x",)
    assert str(tmp_path) not in sys.path  # the folder was searched for this import only


def test_data_that_does_not_fit_the_model(tmp_path: Path, tiny_cnn) -> None:
    loaded = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path)
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 3, 8, 8), np.float32))
    data = load_npz(tmp_path / "bad.npz")
    with pytest.raises(DataError) as err:
        run_reference(loaded, data)
    assert "shape (3, 8, 8)" in err.value.message


def test_a_safetensors_file_is_never_called_a_pickle(tmp_path: Path, affine: Affine, tiny_cnn) -> None:
    """A 128-byte safetensors header length starts the file with 0x80, the pickle protocol byte."""
    from safetensors.torch import save_file

    path = tmp_path / "weights.bin"  # the suffix says nothing: content decides
    tensors = {"w": torch.zeros(1)}
    save_file(tensors, path)
    while path.read_bytes()[0] != 0x80:  # grow the header until its length is 128..255 bytes
        tensors[f"t{len(tensors)}"] = torch.zeros(1)
        save_file(tensors, path)
    assert sniff(path) == "safetensors"
    with pytest.raises(ModelLoadError) as err:
        load_file(path)
    assert "safetensors weights file" in err.value.message and "--weights" in err.value.message
    assert "pickle" not in err.value.message.lower()
    named_as_pt = tmp_path / "state.pt"
    loaded = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path)
    save_file(loaded.module.state_dict(), named_as_pt)
    again = load_factory(tiny_cnn.factory, named_as_pt, tmp_path)  # safetensors bytes under a .pt name
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again.module(x), loaded.module(x))


def test_a_fixed_batch_program_loads_with_its_batch(tmp_path: Path, affine: Affine) -> None:
    from edgekit.data import Dataset

    program = torch.export.export(affine, (torch.randn(1, 4),))
    path = tmp_path / "fixed.pt2"
    torch.export.save(program, path)
    loaded = load_file(path)
    assert loaded.fixed_batch == 1
    features = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    (outputs,), _ = run_reference(loaded, Dataset({"features": features}, None))
    with torch.no_grad():
        assert np.allclose(outputs, affine(torch.from_numpy(features)).numpy(), atol=1e-6)
    dynamic = torch.export.export(affine, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(dynamic, tmp_path / "dynamic.pt2")
    assert load_file(tmp_path / "dynamic.pt2").fixed_batch is None


def test_a_factory_is_identified_by_its_source_not_by_how_its_path_is_spelled(tiny_cnn, tmp_path) -> None:
    import shutil

    from edgekit.model import load_factory

    relative = load_factory("model.py:create", tiny_cnn.weights, tiny_cnn.folder)
    absolute = load_factory(tiny_cnn.factory, tiny_cnn.weights, tmp_path)
    assert relative.sha256 == absolute.sha256  # one model, however the config names its file
    edited = tmp_path / "model.py"
    shutil.copy(tiny_cnn.folder / "model.py", edited)
    edited.write_text(edited.read_text() + "\n# a comment is an edit too\n")
    assert load_factory(f"{edited}:create", tiny_cnn.weights, tmp_path).sha256 != absolute.sha256
