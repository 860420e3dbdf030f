"""Loading models safely, and the facts every backend needs about them.

Accepted sources, detected from the file's contents rather than its name:

- a ``torch.export`` program (``.pt2``);
- a TorchScript archive;
- ``package.module:factory`` or ``file.py:factory`` plus a weights file
  (a state_dict loaded with ``weights_only=True``, or ``.safetensors``);
- a pickled whole module, only with ``trust_pickle``: unpickling runs
  arbitrary code from the file.

Imports torch: only the build path uses this module.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.artifact import sha256_file
from edgekit.data import Dataset
from edgekit.errors import DataError, ModelLoadError, SecurityError


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to export: eval-mode module, its interface and provenance."""

    module: torch.nn.Module
    input_names: tuple[str, ...]
    kind: str  # "exported" | "torchscript" | "factory" | "pickle"
    description: str
    sha256: str
    output_names: tuple[str, ...] = ()
    fixed_batch: int | None = None  # the only batch the model runs at (a .pt2 exported without a dynamic batch)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file: an 8-byte little-endian header length, then that much JSON."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return False
            length = int.from_bytes(head, "little")
            if not 2 <= length <= 100_000_000 or length + 8 > path.stat().st_size:
                return False
            header = handle.read(min(length, 1 << 20))
    except OSError:
        return False
    return header[:1] == b"{"


def sniff(path: Path) -> str:
    """Classify a model file: "exported", "torchscript", "safetensors", "pickle" or "unknown"."""
    if is_safetensors(path):  # before the pickle test: a 128-byte header length starts with 0x80 too
        return "safetensors"
    names = _zip_names(path)
    if any(n.endswith("/archive_format") or "/models/" in n for n in names):
        return "exported"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    with path.open("rb") as handle:
        head = handle.read(2)
    return "pickle" if head[:1] == b"\x80" else "unknown"  # protocol-2+ pickles start with 0x80


def exported_batch(program: torch.export.ExportedProgram) -> int | None:
    """The batch a ``torch.export`` program is fixed to, or None when its batch dimension is dynamic.

    ``torch.export.export`` without ``dynamic_shapes`` (the common case)
    specialises every dimension to the example's; such a program refuses any
    other batch ("Guard failed: x.size()[0] == 1"), so edgekit runs it, and
    every artifact made from it, in chunks of exactly that batch.
    """
    from edgekit.batching import fixed_batch_of

    user_inputs = set(program.graph_signature.user_inputs)
    shapes = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            value = node.meta.get("val")
            shape = getattr(value, "shape", None)
            if not shape:
                return None
            shapes.append(tuple(d if isinstance(d, int) else None for d in shape))
    return fixed_batch_of(shapes) if shapes else None


def _forward_names(module: torch.nn.Module) -> tuple[str, ...]:
    params = inspect.signature(module.forward).parameters.values()
    names = tuple(
        p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    )
    if not names:
        raise ModelLoadError(
            "the model's forward() takes no named positional inputs",
            "Give forward() one positional argument per input tensor",
        )
    return names


def _corrupt(path: Path, exc: BaseException) -> ModelLoadError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"cannot load model file {path}: {first[:300]}",
        "Check the file is complete and was saved with torch.export.save, torch.jit.save or as a state_dict",
    )


def load_file(path: Path, trust_pickle: bool = False) -> LoadedModel:
    """Load a self-contained model file (.pt2, TorchScript, or a trusted pickle)."""
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}", "Check the path")
    kind = sniff(path)
    digest = sha256_file(path)
    try:
        if kind == "exported":
            program = torch.export.load(str(path))
            names = tuple(program.graph_signature.user_inputs)
            return LoadedModel(program.module(), tuple(str(n) for n in names), kind, f"torch.export {path.name}", digest,
                               fixed_batch=exported_batch(program))
        if kind == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu").eval()
            names = tuple(a.name for a in module.forward.schema.arguments[1:])
            return LoadedModel(module, names, kind, f"TorchScript {path.name}", digest)
    except Exception as exc:  # torch raises many unrelated types for damaged archives
        raise _corrupt(path, exc) from None
    if kind == "safetensors":
        raise ModelLoadError(
            f"{path.name} is a safetensors weights file: it holds tensors, not the model's code",
            "Give the model as a factory plus these weights: edgekit build module:function --weights "
            f"{path.name} (or model.factory and model.weights in edgekit.toml)",
        )
    if kind == "pickle":
        if not trust_pickle:
            raise SecurityError(
                f"{path.name} is a pickled Python object; loading it runs whatever code the file contains",
                "If you trust its source pass --trust-pickle (or model.trust_pickle = true); better, re-save it "
                "with torch.export.save (.pt2) or as a state_dict plus a factory",
            )
        try:
            module = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise _corrupt(path, exc) from None
        if isinstance(module, dict):
            raise ModelLoadError(
                f"{path.name} holds a state_dict, not a model",
                "Give it as weights with a factory: model.factory = 'module:function', model.weights = this file",
            )
        if not isinstance(module, torch.nn.Module):
            raise ModelLoadError(f"{path.name} holds a {type(module).__name__}, not a torch.nn.Module", "Check the file")
        return LoadedModel(module.eval(), _forward_names(module), kind, f"pickled module {path.name}", digest)
    raise ModelLoadError(
        f"{path} is not a model file edgekit can read (not a torch.export program, TorchScript or torch.save archive)",
        "Save the model with torch.export.save(program, 'model.pt2')",
    )


def _import_factory(spec: str, base_dir: Path) -> Any:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to a callable."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ModelLoadError(f"model factory '{spec}' is not of the form module:function", "e.g. mypkg.models:create")
    if target.endswith(".py"):
        file = Path(target) if Path(target).is_absolute() else base_dir / target
        if not file.is_file():
            raise ModelLoadError(f"factory file not found: {file}", "Check model.factory")
        # A unique module name per file, so two samples' model.py never collide.
        name = "edgekit_factory_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
        module_spec = importlib.util.spec_from_file_location(name, file)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ModelLoadError(f"importing {file} failed: {type(exc).__name__}: {exc}", "Fix the factory module") from None
    else:
        module = _import_module_from(target, base_dir)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"'{attr}' is not a function in {target}", "Check model.factory")
    return factory


def _import_module_from(name: str, base_dir: Path) -> Any:
    """Import ``name`` as installed, else from ``base_dir`` (the folder of the config, or the working directory).

    The ``edgekit`` script's ``sys.path`` starts at its own folder, not the
    working directory as ``python -m`` does, so a package beside the user is
    found only this way. Appended, not prepended: an installed package of the
    same name wins, as it would for ``python``.
    """
    folder = str(base_dir.resolve())
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot import factory module '{name}' (looked in the installed packages and {folder}): {exc}",
            "Check the module is installed or on PYTHONPATH, or give a file path: path/to/model.py:function",
        ) from None
    finally:
        if added:
            sys.path.remove(folder)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}", "Check model.weights")
    if is_safetensors(path):  # by content, not by name
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise _corrupt(path, exc) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SecurityError(
            f"{path.name} is not a plain state_dict (it pickles Python objects)",
            "Save weights with torch.save(model.state_dict(), path) or safetensors",
        ) from None
    except Exception as exc:
        raise _corrupt(path, exc) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path.name} is not a state_dict of tensors", "Save model.state_dict()")
    return state


def _factory_identity(factory: Any, spec: str) -> bytes:
    """What identifies a factory: its source file's bytes and its name, wherever the file lies (a config
    naming it by a relative or an absolute path is the same model; an edited model.py is another one).
    The spec itself when the source cannot be read."""
    source = getattr(sys.modules.get(getattr(factory, "__module__", "")), "__file__", None)
    try:
        content = Path(source).read_bytes() if source else None
    except OSError:
        content = None
    if content is None:
        return spec.encode()
    return hashlib.sha256(content).digest() + b":" + getattr(factory, "__qualname__", spec).encode()


def load_factory(spec: str, weights: Path | None, base_dir: Path) -> LoadedModel:
    """Build a model from its factory and load its weights strictly."""
    factory = _import_factory(spec, base_dir)
    try:
        module = factory()
    except Exception as exc:
        raise ModelLoadError(f"factory {spec} failed: {type(exc).__name__}: {exc}", "Fix the factory") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"factory {spec} returned {type(module).__name__}, not a torch.nn.Module", "Return the model")
    digest = hashlib.sha256(_factory_identity(factory, spec))
    if weights is not None:
        state = _read_state_dict(weights)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            details = " ".join(str(exc).split())
            raise ModelLoadError(
                f"weights {weights.name} do not match the model from {spec}: {details[:400]}",
                "Use the weights saved from this factory's model (same layer names and shapes)",
            ) from None
        digest.update(bytes.fromhex(sha256_file(weights)))
    description = f"factory {spec}" + (f" + {weights.name}" if weights else "")
    return LoadedModel(module.eval(), _forward_names(module), "factory", description, digest.hexdigest())


def to_torch(batch: dict[str, np.ndarray], names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Numpy feeds → torch tensors in the model's input order (float64 → float32)."""
    tensors = []
    for name in names:
        array = batch[name]
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        tensors.append(torch.from_numpy(np.ascontiguousarray(array)))
    return tuple(tensors)


def flatten_outputs(result: Any) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """A model's output as a list of tensors plus default names (dict keys, namedtuple fields)."""
    if isinstance(result, torch.Tensor):
        return [result], ("output",)
    if isinstance(result, dict):
        return [result[k] for k in result], tuple(str(k) for k in result)
    if isinstance(result, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in result):
        fields = getattr(result, "_fields", None)
        names = tuple(fields) if fields else tuple(f"output_{i}" for i in range(len(result)))
        return list(result), names
    raise DataError(
        f"the model returned {type(result).__name__}; edgekit needs a tensor, a tuple of tensors or a dict of tensors",
        "Make forward() return tensors",
    )


def run_reference(model: LoadedModel, data: Dataset, batch_size: int = 64) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Run the FP32 torch model over ``data``: the reference every artifact is compared to.

    Also the shape check: data that does not fit the model fails here, before
    any export, with the torch error's first line. A fixed-batch model runs in
    chunks of its batch, the last one padded.
    """
    from edgekit.batching import pad_to

    outputs: list[list[np.ndarray]] = []
    names: tuple[str, ...] = ()
    with torch.inference_mode():
        for batch in data.batches(model.fixed_batch or batch_size):
            real = len(next(iter(batch.values())))
            if model.fixed_batch is not None:
                batch, real = pad_to(batch, model.fixed_batch)
            feeds = to_torch(batch, model.input_names)
            try:
                result = model.module(*feeds)
            except Exception as exc:
                shapes = ", ".join(f"{n}: {batch[n].dtype} samples of shape {tuple(batch[n].shape[1:])}" for n in model.input_names)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(
                    f"the data does not fit the model ({shapes}): {first[:300]}",
                    "Give arrays with the shapes and dtypes the model's forward() expects (sample axis first)",
                ) from None
            tensors, names = flatten_outputs(result)
            if not outputs:
                outputs = [[] for _ in tensors]
            for slot, tensor in zip(outputs, tensors, strict=True):
                slot.append(tensor.detach().float().numpy()[:real])
    return [np.concatenate(parts) for parts in outputs], names
