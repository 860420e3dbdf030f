"""torch -> .tflite bytes with litert-torch (float, and INT8 through its PT2E quantizer).

Contracts:

- Models are exported at batch 1, or at exactly ``job.fixed_batch`` when the
  source model only runs at that batch (a ``torch.export`` program saved
  without a dynamic batch refuses any other). litert-torch produces
  fixed-shape graphs (a flatten becomes a RESHAPE to a constant shape), so a
  dynamic batch is not reliable; the runtime session feeds blocks of the
  exported batch instead, padding the last one.
- The model is wrapped so that its inputs are keyword arguments named after
  ``job.inputs`` and its outputs a dict keyed by ``job.output_names``:
  litert-torch names the signature's inputs after keyword arguments and its
  outputs after dict keys, so the .tflite interface carries edgekit's names.
- int64 inputs (token ids, masks) become int32 in the .tflite: litert-torch
  downcasts 64-bit I/O by default, which is what on-device runtimes support.
- A model litert-torch cannot lower raises UnsupportedModelError naming the
  aten op and the torch module it came from, never a converter stack trace.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from edgekit.errors import DataError, InternalError, UnsupportedModelError

# Calibration beyond this many samples rarely moves PT2E's histogram observers
# and costs a batch-1 forward each.
MAX_CALIBRATION_SAMPLES = 256


class NamedIO(torch.nn.Module):
    """``model`` with keyword inputs named ``input_names`` and a dict output keyed by ``output_names``."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)

    def train(self, mode: bool = True) -> NamedIO:
        """Set the mode; a ``torch.export`` module (a fixed-batch .pt2) refuses train()/eval() and is left as is."""
        self.training = mode
        try:
            self.model.train(mode)
        except NotImplementedError:  # ExportedProgram.module(): already an inference graph
            pass
        return self

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(*[inputs[name] for name in self.input_names])
        flat = flatten_outputs(out)
        if len(flat) != len(self.output_names):
            raise ValueError(f"the model returned {len(flat)} tensors but {len(self.output_names)} output names were given")
        return dict(zip(self.output_names, flat))


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    if hasattr(out, "to_tuple"):  # transformers ModelOutput
        return flatten_outputs(out.to_tuple())
    raise TypeError(f"unsupported model output type {type(out).__name__}")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence litert-torch's progress printer and converter warnings while converting."""
    saved = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    # litert-torch warns on the root logger (x64 downcast, train mode) and torch.export logs
    # whole graphs on loggers it creates lazily when a model cannot be captured; edgekit raises
    # a clear error instead. logging.disable covers loggers that do not exist yet.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        if saved is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved


def batch_one(example_inputs: Sequence[torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The example inputs sliced to batch 1, keyed by input name."""
    return at_batch(example_inputs, names, 1)


def at_batch(example_inputs: Sequence[torch.Tensor], names: Sequence[str], batch: int) -> dict[str, torch.Tensor]:
    """The example inputs at exactly ``batch`` samples (cut, or padded by repeating the last), keyed by name."""
    out = {}
    for name, t in zip(names, example_inputs):
        if len(t) < batch:
            t = torch.cat([t, t[-1:].expand(batch - len(t), *t.shape[1:])])
        out[name] = t[:batch].contiguous()
    return out


def calibration_samples(
    calibration: dict[str, np.ndarray], examples: dict[str, torch.Tensor], limit: int = MAX_CALIBRATION_SAMPLES
) -> list[dict[str, torch.Tensor]]:
    """Calibration data as torch feeds of the examples' batch, in the examples' dtypes.

    Each feed holds ``batch`` samples (1 unless the model has a fixed
    batch); the last one is padded by repeating its final sample, which only
    repeats a value the observers have already seen. At most ``limit``
    samples are used.
    """
    missing = [name for name in examples if name not in calibration]
    if missing:
        raise DataError(
            f"static INT8 needs calibration data for input '{missing[0]}', but the calibration split has "
            f"{', '.join(sorted(calibration)) or 'no arrays'}",
            "Pass --data with one array per model input (or `x` for a single-input model)",
        )
    sizes = {len(calibration[name]) for name in examples}
    if len(sizes) != 1 or 0 in sizes:
        raise DataError(
            "calibration arrays must be non-empty and have the same number of samples for every input",
            "Check the calibration data file",
        )
    count = min(sizes.pop(), limit)
    batch = max(1, len(next(iter(examples.values())))) if examples else 1
    samples = []
    for i in range(0, count, batch):
        sample = {}
        for name, example in examples.items():
            value = np.asarray(calibration[name][i : min(i + batch, count)])
            if len(value) < batch:
                value = np.concatenate([value, np.repeat(value[-1:], batch - len(value), axis=0)])
            if tuple(value.shape[1:]) != tuple(example.shape[1:]):
                raise DataError(
                    f"calibration input '{name}' has samples of shape {list(value.shape[1:])}, "
                    f"the model expects {list(example.shape[1:])}",
                    "Check the calibration data matches the model's inputs",
                )
            sample[name] = torch.from_numpy(np.ascontiguousarray(value)).to(example.dtype)
        samples.append(sample)
    return samples


# ---------------------------------------------------------------- diagnosis


def _failing_node(exc: BaseException) -> torch.fx.Node | None:
    """The innermost fx node being lowered when ``exc`` was raised (from the traceback's frames)."""
    node = None
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("node")
        if isinstance(candidate, torch.fx.Node):
            node = candidate
        tb = tb.tb_next
    return node


def _module_path(node: torch.fx.Node | None) -> str | None:
    """The dotted path of the torch submodule that produced ``node``, without edgekit's wrapper."""
    if node is None:
        return None
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, module_type = list(stack.values())[-1]
    path = re.sub(r"^L\['self'\]\.?", "", str(path))
    path = re.sub(r"^model\.?", "", path)  # NamedIO's attribute
    type_name = getattr(module_type, "__name__", None) or str(module_type).rsplit(".", 1)[-1].strip("'>")
    return f"{path or '(top level)'} ({type_name})"


def _op_name(exc: BaseException, node: torch.fx.Node | None) -> str | None:
    match = re.search(r"Lowering not found: (\S+)", str(exc))
    if match:
        return match.group(1)
    if node is not None and node.op == "call_function":
        return str(node.target)
    return None


def unsupported_error(exc: BaseException, target: str, stage: str = "convert") -> UnsupportedModelError | None:
    """An UnsupportedModelError naming the op, module and target if ``exc`` is a lowering failure, else None."""
    node = _failing_node(exc)
    op = _op_name(exc, node)
    if op is None:
        return None
    where = _module_path(node)
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return UnsupportedModelError(
        f"litert-torch cannot convert op '{op}'"
        + (f" from module {where}" if where else "")
        + f" to TFLite for target '{target}' ({stage}: {first})",
        "Replace that op with supported ones, or build another format for this target",
    )


def _in_torch_export(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while torch.export traced the model (not while litert-torch lowered it)."""
    tb = exc.__traceback__
    in_export = False
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if "/litert_torch/backend/" in filename or "/litert_converter/" in filename:
            return False
        if any(part in filename for part in ("/torch/export/", "/torch/_export/", "/torch/_dynamo/", "/torch/fx/experimental/")):
            in_export = True
        tb = tb.tb_next
    return in_export


def conversion_error(exc: BaseException, target: str, stage: str) -> Exception:
    """The edgekit error for a failed conversion: UnsupportedModelError when the model is to blame."""
    if _in_torch_export(exc):
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return UnsupportedModelError(
            f"torch.export cannot capture the model for TFLite target '{target}' ({type(exc).__name__}: {first})",
            "Make the forward pass exportable (no Python branches on tensor values), or build another format",
        )
    found = unsupported_error(exc, target, stage)
    if found is not None:
        return found
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return InternalError(f"litert-torch failed to {stage} the model for target '{target}' ({type(exc).__name__}: {first})")


# ---------------------------------------------------------------- conversion


def convert_float(module: torch.nn.Module, inputs: dict[str, torch.Tensor], target: str) -> bytes:
    """A float32 .tflite of ``module`` (a ``NamedIO``), traced at the given batch-1 inputs."""
    import litert_torch

    try:
        with quiet(), torch.no_grad():
            edge = litert_torch.convert(module, sample_kwargs=inputs)
            return _edge_bytes(edge)
    except Exception as exc:
        raise conversion_error(exc, target, "convert") from exc


def _edge_bytes(edge: Any) -> bytes:
    """Bytes of a litert-torch model object, whatever its version calls the method."""
    for name in ("model_content", "tflite_model"):
        if hasattr(edge, name):
            return bytes(getattr(edge, name)())
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        edge.export(path)
        with open(path, "rb") as handle:
            return handle.read()


def _is_observer_flake(exc: BaseException) -> bool:
    """prepare_pt2e on Conv-BN-ReLU-MaxPool fails intermittently with an observer assertion (DESIGN.md)."""
    return isinstance(exc, AssertionError) or "observer" in str(exc).lower()


def convert_pt2e(
    module: torch.nn.Module,
    inputs: dict[str, torch.Tensor],
    samples: list[dict[str, torch.Tensor]],
    target: str,
    dynamic: bool = False,
    per_channel: bool = True,
    attempts: int = 2,
) -> tuple[bytes, dict[str, Any]]:
    """INT8 .tflite via litert-torch's PT2E quantizer and torchao prepare_pt2e/convert_pt2e.

    Static mode calibrates on ``samples`` (batch-1 feeds); dynamic mode
    quantizes weights only and lets the kernels quantize activations at run
    time. Retries once when prepare_pt2e trips its intermittent observer
    assertion. Returns the bytes and facts for the artifact's details.
    """
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval
    except ImportError:  # older torchao
        move_exported_model_to_eval = None

    notes: dict[str, Any] = {"attempts": 0}
    for attempt in range(attempts):
        notes["attempts"] = attempt + 1
        stage = "export"
        try:
            with quiet(), torch.no_grad():
                quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
                    pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=dynamic)
                )
                graph = torch.export.export(module, (), inputs, strict=False).module()
                stage = "prepare_pt2e"
                prepared = quantize_pt2e.prepare_pt2e(graph, quantizer)
                stage = "calibrate"
                # Dynamic mode has no activation observers; one forward pass settles the weight observers.
                for sample in (samples or [inputs]) if not dynamic else [inputs]:
                    prepared(**sample)
                stage = "convert_pt2e"
                converted = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
                if move_exported_model_to_eval is not None:
                    move_exported_model_to_eval(converted)
                stage = "convert"
                edge = litert_torch.convert(converted, sample_kwargs=inputs, quant_config=QuantConfig(pt2e_quantizer=quantizer))
                data = _edge_bytes(edge)
                return data, notes
        except Exception as exc:
            # The flaky assertion comes from an observer, raised while preparing or while calibrating.
            if stage in ("prepare_pt2e", "calibrate") and _is_observer_flake(exc) and attempt + 1 < attempts:
                notes["retried_after"] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            raise conversion_error(exc, target, stage) from exc
    raise InternalError("PT2E quantization made no attempt (attempts must be at least 1)")
