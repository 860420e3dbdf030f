"""PyTorch -> ``.pte``: torch.export with a bounded dynamic batch, PT2E quantization, XNNPACK lowering.

ExecuTorch plans every activation buffer ahead of time, so a dynamic batch
needs an upper bound: programs accept 1..``max_batch`` samples and sessions
feed larger inputs in chunks. A model with ``job.fixed_batch`` is exported at
exactly that batch. INT8 follows ExecuTorch's XNNPACK recipe: PT2E
``prepare_pt2e`` with ``XNNPACKQuantizer`` (symmetric, per-channel weights),
calibration on ``job.calibration`` (static, tensors with a calibrated range
over ``RANGE_LIMIT`` kept float) or activation scales computed per run
(dynamic), ``convert_pt2e``, export again, lower.

Imports torch, torchao and executorch: build-time only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekit.backends import ExportJob
from edgekit.errors import UnsupportedModelError
from edgekit.native_output import quiet_python as quiet

# Edge-dialect and ATen ops that carry a model's compute (the ops "coverage" counts).
_COMPUTE = re.compile(r"(convolution|conv[123]d|linear|addmm|\bmm\b|_mm\b|bmm|matmul|embedding|_scaled_dot_product)")
_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8",
                torch.uint8: "uint8", torch.int32: "int32", torch.int64: "int64"}


def _unsupported(job: ExportJob, step: str, exc: BaseException) -> UnsupportedModelError:
    text = str(exc).strip()
    ops = sorted(set(re.findall(r"aten[.:]{1,2}[A-Za-z_0-9.]+", text)))
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    what = f" (op {', '.join(ops[:5])})" if ops else ""
    return UnsupportedModelError(
        f"ExecuTorch {step} for target {job.profile.name} failed{what}: {first}",
        "Make the model torch.export-able with supported ops, or drop the executorch artifacts from this target",
    )


def dynamic_shapes(job: ExportJob, max_batch: int) -> tuple[dict[int, Any], ...] | None:
    """One shared batch dimension 1..max_batch for every input, or None for a fixed-batch model."""
    if job.fixed_batch:
        return None
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))  # export needs max >= the example's 2
    return tuple({0: batch} for _ in job.example_inputs)


def export(job: ExportJob, model: torch.nn.Module, max_batch: int) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` with the job's example inputs and a bounded batch."""
    if isinstance(job.model, torch.jit.ScriptModule):
        raise UnsupportedModelError(
            "ExecuTorch lowers torch.export programs; a TorchScript model cannot be exported to it",
            "Give the model as a .pt2 program or a factory + weights, or drop the executorch artifacts",
        )
    try:
        shapes = dynamic_shapes(job, max_batch)
        if isinstance(model, HalfPrecision) and shapes is not None:
            shapes = (shapes,)  # forward(*inputs): one entry for the packed positional arguments
        with quiet():
            return torch.export.export(model, job.example_inputs, dynamic_shapes=shapes)
    except Exception as exc:  # torch.export raises many types for unsupported code
        raise _unsupported(job, "export", exc) from None


class HalfPrecision(torch.nn.Module):
    """``model`` in FP16 behind float32 I/O: the XNNPACK delegate then runs its FP16 kernels."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, *inputs: torch.Tensor) -> Any:
        cast = [t.half() if t.is_floating_point() else t for t in inputs]
        out = self.model(*cast)
        if isinstance(out, torch.Tensor):
            return out.float()
        return tuple(o.float() if o.is_floating_point() else o for o in out)


def calibration_batches(job: ExportJob, batch: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The calibration split in input order, as torch tensors of ``batch`` samples (the last may be smaller)."""
    names = [spec.name for spec in job.inputs]
    arrays = [job.calibration[name] for name in names]
    dtypes = [t.dtype for t in job.example_inputs]
    step = job.fixed_batch or batch
    for start in range(0, len(arrays[0]) - (len(arrays[0]) % step if job.fixed_batch else 0), step):
        yield tuple(torch.from_numpy(np.ascontiguousarray(a[start:start + step])).to(d) for a, d in zip(arrays, dtypes))


# Tensors whose calibrated range is wider than this stay float (as in the ONNX backend): an attention
# mask added as a -1e9 bias would spend the whole int8 range and zero every real score.
RANGE_LIMIT = 1e4


def _wide_ranges(prepared: torch.fx.GraphModule) -> list[str]:
    """Names of the nodes whose calibrated output range exceeds ``RANGE_LIMIT``."""
    wide = []
    for node in prepared.graph.nodes:
        if node.op != "call_module" or "activation_post_process" not in str(node.target):
            continue
        observer = getattr(prepared, str(node.target))
        low, high = getattr(observer, "min_val", None), getattr(observer, "max_val", None)
        if isinstance(low, torch.Tensor) and isinstance(high, torch.Tensor) and low.numel() and high.numel():
            if float(high.max()) - float(low.min()) > RANGE_LIMIT and isinstance(node.args[0], torch.fx.Node):
                wide.append(node.args[0].name)
    return wide


def _skipping(base: Any, skip: set[str]) -> Any:
    """``base`` (a PT2E quantizer) with the nodes named in ``skip`` left unquantized, inputs and output."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class SkipNodes(Quantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = base.annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None:
                    continue
                if node.name in skip:
                    del node.meta["quantization_annotation"]
                    continue
                for source in [n for n in annotation.input_qspec_map if n.name in skip]:
                    del annotation.input_qspec_map[source]
            return model

        def validate(self, model: torch.fx.GraphModule) -> None:
            base.validate(model)

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            return base.transform_for_annotation(model)

    return SkipNodes()


def quantize(job: ExportJob, program: torch.export.ExportedProgram, dynamic: bool, max_batch: int
             ) -> tuple[torch.export.ExportedProgram, list[str]]:
    """PT2E INT8 with the XNNPACK quantizer, exported again with the same batch bound; and the nodes kept float.

    Static: after calibration, nodes whose range exceeds ``RANGE_LIMIT`` are
    left float and the model is prepared and calibrated again without them.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    def calibrated(quantizer: Any) -> torch.fx.GraphModule:
        prepared = prepare_pt2e(program.module(), quantizer)
        for batch in calibration_batches(job, max_batch):
            prepared(*batch)
            if dynamic:  # dynamic scales are computed per run; one pass only traces the observers
                break
        return prepared

    step = "dynamic INT8 quantization" if dynamic else "INT8 quantization"
    try:
        with quiet(), torch.no_grad():
            config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
            base = XNNPACKQuantizer().set_global(config)
            prepared = calibrated(base)
            kept = [] if dynamic else _wide_ranges(prepared)
            if kept:
                prepared = calibrated(_skipping(base, set(kept)))
            converted = convert_pt2e(prepared)
            shapes = dynamic_shapes(job, max_batch)
            return torch.export.export(converted, job.example_inputs, dynamic_shapes=shapes), kept
    except Exception as exc:
        raise _unsupported(job, step, exc) from None


# torchao's "8da4w": int8 activations quantized per run, int4 weights in groups along the input dimension.
INT4_GROUP = 32


def int4(job: ExportJob, max_batch: int) -> torch.export.ExportedProgram:
    """Linear layers with int4 weights (groups of ``INT4_GROUP``) and dynamic int8 activations, exported.

    torchao's ``Int8DynamicActivationIntxWeightConfig``, which ExecuTorch's XNNPACK delegate runs. Only linear
    layers whose input width is a multiple of the group are quantized; the rest stay float (coverage lists them).
    """
    import copy

    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    model = copy.deepcopy(job.model)
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(INT4_GROUP))
    try:
        with quiet():
            quantize_(model, config, filter_fn=lambda m, _: isinstance(m, torch.nn.Linear)
                      and m.in_features % INT4_GROUP == 0)
    except Exception as exc:
        raise _unsupported(job, "INT4 quantization", exc) from None
    return export(job, model, max_batch)


@dataclass(frozen=True)
class Lowered:
    """A lowered program's bytes and what the XNNPACK partitioner took."""

    data: bytes
    census: dict[str, int]  # weight elements per stored precision (``weight_census``)
    compute_ops: int  # compute ops of the program before lowering
    delegated_ops: int  # of those, the ones inside XNNPACK delegate calls
    left_out: tuple[tuple[str, str | None], ...]  # (op, module path) of compute ops that run in portable kernels
    delegate_calls: int


def _compute_nodes(graph_module: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [n for n in graph_module.graph.nodes if n.op == "call_function" and _COMPUTE.search(str(n.target))]


def _module_path(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return str(path).removeprefix("L['self'].").replace("L__self___", "") or None


def constant_methods(job: ExportJob, census: dict[str, int]) -> dict[str, Any]:
    """Facts a ``.pte`` cannot hold otherwise, as constant methods: I/O names and the fixed batch (read by the
    runtime), and the weight census (read by ``inspect``: XNNPACK packs weights inside its opaque delegate blob)."""
    import json

    from edgekit.backends.executorch.methods import FIXED_BATCH, INPUT_NAMES, OUTPUT_NAMES, WEIGHTS

    return {INPUT_NAMES: [spec.name for spec in job.inputs], OUTPUT_NAMES: list(job.output_names),
            FIXED_BATCH: int(job.fixed_batch or 0), WEIGHTS: json.dumps(census, sort_keys=True)}


def lower(job: ExportJob, program: torch.export.ExportedProgram) -> Lowered:
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner, then the ``.pte`` bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    compute = _compute_nodes(program.graph_module)
    try:
        with quiet():
            # The census needs the stored blob sizes, and is itself stored in the program: lower once to measure,
            # then again with the census (lowering is deterministic, so the blobs are the same).
            probe = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                                constant_methods=constant_methods(job, {}))
            census = weight_census(program, stored_blobs(bytes(probe.to_executorch().buffer)))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               constant_methods=constant_methods(job, census))
            top = edge.exported_program().graph_module
            data = edge.to_executorch().buffer
    except Exception as exc:
        raise _unsupported(job, "lowering", exc) from None
    left = _compute_nodes(top)
    calls = sum(1 for n in top.graph.nodes if n.op == "call_function" and "executorch_call_delegate" in str(n.target))
    return Lowered(bytes(data), census, len(compute), max(0, len(compute) - len(left)),
                   tuple((str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target), _module_path(n))
                         for n in left), calls)


def _used_tensors(program: torch.export.ExportedProgram) -> dict[str, torch.Tensor]:
    """Parameters, buffers and lifted constants the graph reads, by placeholder name.

    A re-exported ``convert_pt2e`` module still registers the float weights it
    replaced with int8 constants; they are lifted but unused, and not written.
    """
    signature = program.graph_signature
    sources = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
               **signature.inputs_to_lifted_tensor_constants}
    values = {**program.state_dict, **program.constants}
    used = {}
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.users and node.name in sources:
            tensor = values.get(sources[node.name])
            if isinstance(tensor, torch.Tensor):
                used[node.name] = tensor
    return used


# Bytes per element of each stored width, narrowest last; int4 packs two elements in a byte.
_WIDTHS = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


def _stored_as(tensor: torch.Tensor, blobs: Counter[int]) -> str:
    """The width ``tensor`` is stored at, found by the size of a blob (consumed); its program dtype when none fits.

    The program's own width is tried first, then the others: the XNNPACK
    serializer writes FP16 convolution weights as FP32, and torchao's int4
    weights (an int8-unpacked tensor subclass of nominal dtype float32) packed.
    """
    own = _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype).removeprefix("torch."))
    # Only those two known cases: a plain tensor without a blob of its size (BatchNorm statistics folded into a
    # convolution, say) must not be matched by chance to some narrower blob.
    packed = type(tensor) not in (torch.Tensor, torch.nn.Parameter)  # a torchao quantized tensor subclass
    widths = ["int4", "int8"] if packed else (["fp32"] if tensor.is_floating_point() else [])
    for name in dict.fromkeys([own, *widths]):
        size = tensor.numel() * (_WIDTHS[name] if name in _WIDTHS else tensor.element_size())
        if size == int(size) and blobs[int(size)]:
            blobs[int(size)] -= 1
            return name
    return own


def weight_census(program: torch.export.ExportedProgram, stored: list[int] | None = None) -> dict[str, int]:
    """Weight elements per stored precision, over the tensors the program uses (scalars left out).

    PT2E's ``convert_pt2e`` folds each quantized weight into an int8 constant.
    ``stored`` are the byte sizes of the weight blobs the ``.pte`` holds
    (``stored_blobs``): each tensor is matched to a blob of its size and counted
    at the width it is stored at (``_stored_as``). Per-channel scales and zero
    points of PT2E count too, as biases do in the other formats.
    """
    blobs = Counter(stored or [])
    counts: Counter[str] = Counter()
    for tensor in sorted((t for t in _used_tensors(program).values() if t.numel() > 1), key=lambda t: -t.numel()):
        counts[_stored_as(tensor, blobs)] += tensor.numel()
    return dict(counts)


def stored_blobs(data: bytes) -> list[int]:
    """Byte sizes of the named data blobs (the delegate's weights) inside ``.pte`` bytes."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    named = deserialize_pte_binary(data).named_data
    return [len(buffer) for buffer in getattr(named, "buffers", [])]


def float_weight_ops(program: torch.export.ExportedProgram, limit_bits: int, stored: list[int]
                     ) -> list[tuple[str, str | None, int, str]]:
    """(op, module path, weight elements, why) of compute ops whose weight is stored wider than ``limit_bits``.

    Widths come from the blobs, as in ``weight_census``: an FP16 weight the
    XNNPACK serializer wrote as FP32 counts as FP32.
    """
    used = _used_tensors(program)
    blobs = Counter(stored)
    bits = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
    found = []
    for node in _compute_nodes(program.graph_module):
        weight_index = 0 if "embedding" in str(node.target) else 1
        if len(node.args) <= weight_index or not isinstance(node.args[weight_index], torch.fx.Node):
            continue
        tensor = used.get(node.args[weight_index].name)
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            continue
        width = _stored_as(tensor, blobs)
        if bits.get(width, 32) <= limit_bits:
            continue
        op = str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
        why = ("the XNNPACK serializer stores this weight as FP32" if width == "fp32" and tensor.dtype == torch.float16
               else "the quantizer left it float")
        found.append((op, _module_path(node), tensor.numel(), why))
    return found
