"""torch → Core ML ML Program (``.mlpackage``) with coremltools.

Routes, tried in this order until one converts:

1. ``torch.export`` + ``run_decompositions({})``: keeps high-level ATen ops
   (``linear``, ``layer_norm``, ``scaled_dot_product_attention``) that
   coremltools maps to fused MIL ops; what converts Transformers
   (``jit.trace`` of ``nn.TransformerEncoder`` fails its sanity check).
2. The same program with only the ops coremltools rejected decomposed by
   the default core-ATen table (``rewrites = ["decomposed aten.new_ones"]``):
   coremltools 9.0 has no converter for ``new_ones``, which the core-ATen
   table turns into ``full``. Repeated while each attempt names a new
   decomposable op (at most ``MAX_TARGETED`` rounds).
3. ``run_decompositions()`` with the whole default core-ATen table.
4. ``torch.jit.trace``, for models ``torch.export`` cannot capture.

Each ``torch.export`` route is tried with a flexible batch (``ct.RangeDim``)
first and a fixed batch of 1 after that; a model that only runs at one
batch (``job.fixed_batch``, a fixed-batch ``.pt2``) is converted at exactly
that batch and nothing else. The result records the route, the rewrites that
made it convert and the batch mode; when every route fails the error names
each failing op and the PyTorch module it sits in (``nn_module_stack`` of the
exported program, or the TorchScript scope for ``jit.trace``).

``ModuleMap`` maps Core ML names back to PyTorch module paths: the converter
names ML Program ops after the fx nodes they come from (``linear_3`` →
``linear_3_cast_fp16``) and weights after their parameter placeholders
(``p_fc_weight`` → ``p_fc_weight_to_fp16``).

Imports torch and coremltools: build-time only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends import ExportJob
from edgekit.backends.coreml import mil_fixes
from edgekit.errors import ConfigError, UnsupportedModelError

MAX_BATCH = 1024  # upper bound of the flexible batch; larger batches are run in chunks by the session
SUPPORTED_IOS = ("17", "18")
MAX_TARGETED = 4  # rounds of "decompose what coremltools rejected, convert again"
CORE_ATEN = "core-ATen decompositions (run_decompositions() with the default table)"


@dataclass(frozen=True)
class ModuleMap:
    """Core ML op and weight names → the PyTorch module path they came from (torch.export routes only).

    ``nodes``: fx node name → module path (innermost ``nn_module_stack``
    entry; a batch norm folded into its conv names the conv, whose weight the
    Core ML op carries). ``params``: placeholder name → parameter FQN.
    """

    nodes: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    # Suffixes the converter and coremltools.optimize append to fx names.
    _SUFFIX = re.compile(r"(_cast_fp16|_cast_fp32|_to_fp16|_to_fp32|_quantized|_palettized|_sparsified|_\d+)$")

    def _lookup(self, name: str) -> str | None:
        while name:
            if name in self.params:
                return self.params[name].rpartition(".")[0] or None
            if name in self.nodes:
                return self.nodes[name] or None
            stripped = self._SUFFIX.sub("", name)
            if stripped == name:
                return None
            name = stripped
        return None

    def module_of(self, *names: str | None) -> str | None:
        """The module path of the first name that maps (pass a weight name, then its consuming op's name)."""
        for name in names:
            if name:
                found = self._lookup(name)
                if found is not None:
                    return found
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "params": self.params}


@dataclass(frozen=True)
class Exported:
    """A converted model (in memory) and how it was made."""

    model: Any  # ct.models.MLModel
    export_path: str  # "torch.export" | "jit.trace"
    flexible_batch: bool
    min_ios: str
    compute_precision: str  # "fp32" | "fp16"
    notes: list[str] = field(default_factory=list)
    fp32_ops: tuple[str, ...] = ()  # op types kept in FP32 inside an FP16 program
    rewrites: tuple[str, ...] = ()  # what made the model convert (empty: the first route did)
    batch: int | None = None  # the batch the program takes when it is not flexible
    modules: ModuleMap = field(default_factory=ModuleMap)
    route: tuple[Any, ...] = ()  # (path, batch, decomposition) that converted, to repeat it for other precisions
    source: Any = None  # what ct.convert read (decomposed program or traced module), reusable for another precision


def min_ios(job: ExportJob) -> str:
    """The profile's minimum iOS as "17"/"18"; profiles without one get iOS 17 (the oldest edgekit targets)."""
    value = job.profile.device.min_ios or "17"
    major = str(value).split(".")[0]
    if major not in SUPPORTED_IOS:
        raise ConfigError(
            f"target {job.profile.name} sets device.min_ios = {value!r}; the Core ML backend targets iOS "
            f"{' or '.join(SUPPORTED_IOS)}",
            "Set min_ios to \"17\" or \"18\"",
        )
    return major


def deployment_target(major: str) -> Any:
    import coremltools as ct

    return {"17": ct.target.iOS17, "18": ct.target.iOS18}[major]


class _ConverterLog(logging.Handler):
    """Collects coremltools' "ERROR - converting 'kind' op (located at: 'scope')" lines."""

    PATTERN = re.compile(r"converting '([^']+)' op \(located at: '([^']*)'\)")

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.failed: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            self.failed.append((match.group(1), match.group(2)))


@contextlib.contextmanager
def quiet(log: _ConverterLog | None = None) -> Iterator[None]:
    """coremltools prints progress bars and version warnings to stderr/stdout; keep the CLI clean."""
    loggers = [logging.getLogger(n) for n in ("coremltools", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    if log is not None:
        loggers[0].addHandler(log)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        if log is not None:
            loggers[0].removeHandler(log)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _ct_inputs(job: ExportJob, batch: int | None) -> list[Any]:
    """Input types; ``batch`` None = flexible batch (1..MAX_BATCH)."""
    import coremltools as ct

    specs = []
    for spec, example in zip(job.inputs, job.example_inputs, strict=True):
        rest = tuple(int(d) for d in example.shape[1:])
        first = ct.RangeDim(lower_bound=1, upper_bound=MAX_BATCH, default=1) if batch is None else batch
        # Core ML has no int64 tensors: integer inputs are int32 (the session casts int64 data).
        dtype = np.int32 if np.dtype(spec.dtype).kind in "iu" else np.float32
        specs.append(ct.TensorType(name=spec.name, shape=ct.Shape((first, *rest)), dtype=dtype))
    return specs


def _ct_outputs(job: ExportJob) -> list[Any]:
    import coremltools as ct

    # float32 outputs even for FP16 compute: the interface stays float32 (a final cast is added).
    return [ct.TensorType(name=name, dtype=np.float32) for name in job.output_names]


def _examples(job: ExportJob, batch: int | None) -> tuple[Any, ...]:
    """Example inputs at ``batch`` samples (None: as given), repeated when the examples hold fewer."""
    import torch

    out = []
    for t in job.example_inputs:
        if batch is not None:
            t = t[:batch] if len(t) >= batch else torch.cat([t] * (batch // len(t) + 1))[:batch]
        out.append(t.contiguous())  # a contiguous memory format: channels-last or sliced examples trip the converter
    return tuple(out)


def batch_modes(job: ExportJob) -> list[int | None]:
    """Batches to convert at, in order: flexible then 1, or exactly the model's fixed batch."""
    return [job.fixed_batch] if job.fixed_batch else [None, 1]


def _capture_export(job: ExportJob, batch: int | None) -> Any:
    import torch

    if batch is None:
        examples = _examples(job, None if len(job.example_inputs[0]) > 1 else 2)
        dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        return torch.export.export(job.model, examples, dynamic_shapes=tuple({0: dim} for _ in examples))
    return torch.export.export(job.model, _examples(job, batch))


def _capture_trace(job: ExportJob, batch: int | None) -> Any:
    import torch

    with torch.no_grad():
        return torch.jit.trace(job.model, _examples(job, batch), check_trace=False)


def _module_map(program: Any) -> ModuleMap:
    """fx node → module path and placeholder → parameter FQN, from an exported program."""
    nodes: dict[str, str] = {}
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if stack:
            nodes[node.name] = list(stack.values())[-1][0]
    for node in program.graph.nodes:  # a folded batch norm: the Core ML conv carries the conv's weight
        if node.op == "call_function" and "batch_norm" in str(node.target) and node.args:
            source = node.args[0]
            if getattr(source, "name", None) in nodes and "conv" in str(getattr(source, "target", "")):
                nodes[node.name] = nodes[source.name]
    params = dict(program.graph_signature.inputs_to_parameters)
    params.update(program.graph_signature.inputs_to_buffers)
    return ModuleMap(nodes, params)


def _kind(target: Any) -> str:
    """coremltools' canonical op kind of an fx target ("aten.new_ones.default" → "new_ones")."""
    parts = str(target).split(".")
    name = parts[1] if len(parts) > 1 and parts[0] in ("aten", "prim") else parts[0]
    return name.strip("_").lower()


@dataclass(frozen=True)
class _Failure:
    """Why one conversion attempt failed, with the op and module when they could be found."""

    route: str
    error: str
    ops: tuple[tuple[str, Any, str | None], ...] = ()  # (fx node name, target, module path)

    def text(self) -> str:
        return f"{self.route}: {_ops_text(self.ops) + ': ' if self.ops else ''}{self.error}"


def _ops_text(ops: tuple[tuple[str, Any, str | None], ...]) -> str:
    """"aten.new_ones.default (node new_ones in module 'encoder.embed')" for each distinct failing op."""
    seen: dict[str, None] = {}
    for name, target, module in ops:
        where = f"module '{module}'" if module else "the model's own forward" if name else ""
        node = f"node {name}" if name else ""
        place = " in ".join(p for p in (node, where) if p)
        seen[f"{_describe(target)}" + (f" ({place})" if place else "")] = None
    return ", ".join(list(seen)[:4])


def _describe(target: Any) -> str:
    return str(target) if not callable(target) or hasattr(target, "_schema") else getattr(target, "__name__", str(target))


def _failing_ops(program: Any, exc: Exception, log: _ConverterLog) -> tuple[tuple[str, Any, str | None], ...]:
    """The fx nodes coremltools failed on: named by the error, or every node of the kind it logged."""
    modules = _module_map(program)
    by_name = {n.name: n for n in program.graph.nodes if n.op == "call_function"}
    match = re.search(r"Unsupported fx node (\S+), kind", str(exc))
    if match and match.group(1) in by_name:
        node = by_name[match.group(1)]
        return ((node.name, node.target, modules.nodes.get(node.name)),)
    kinds = {kind for kind, _ in log.failed}
    return tuple((n.name, n.target, modules.nodes.get(n.name)) for n in by_name.values() if _kind(n.target) in kinds)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"


class _Converter:
    """One ``convert`` call: the ct.convert settings and the failures seen so far."""

    def __init__(self, job: ExportJob, compute_precision: str, fp32_ops: tuple[str, ...]) -> None:
        import coremltools as ct

        self.job = job
        self.major = min_ios(job)
        if compute_precision == "fp32":
            self.precision = ct.precision.FLOAT32
        elif fp32_ops:
            self.precision = ct.transform.FP16ComputePrecision(op_selector=lambda op: op.op_type not in fp32_ops)
        else:
            self.precision = ct.precision.FLOAT16
        self.failures: list[_Failure] = []
        self.fp16 = compute_precision != "fp32"
        self.repairs: tuple[str, ...] = ()  # ops mil_fixes rewrote in the last conversion
        self.clamped: tuple[str, ...] = ()  # constants it brought into FP16's range

    def __call__(self, source: Any, batch: int | None) -> Any:
        import coremltools as ct

        mil_fixes.repaired.clear()
        mil_fixes.clamped.clear()
        model = ct.convert(
            source,
            convert_to="mlprogram",
            minimum_deployment_target=deployment_target(self.major),
            compute_precision=self.precision,
            inputs=_ct_inputs(self.job, batch),
            outputs=_ct_outputs(self.job),
            pass_pipeline=mil_fixes.pipeline(fp16=self.fp16),
            skip_model_load=True,  # loading needs the macOS runtime; validation uses the saved bytes
        )
        self.repairs = tuple(mil_fixes.repaired)
        self.clamped = tuple(mil_fixes.clamped)
        return model

    def attempt(self, label: str, program: Any, batch: int | None) -> tuple[Any, tuple[tuple[str, Any, str | None], ...]]:
        """(model, ()) on success; (None, failing ops) after recording the failure."""
        log = _ConverterLog()
        try:
            with quiet(log):
                return self(program, batch), ()
        except Exception as exc:  # converters raise anything; keep the op and the first line for the report
            ops = _failing_ops(program, exc, log) if hasattr(program, "graph_signature") else ()
            if not ops and log.failed:  # TorchScript: coremltools logs the op kind (its scopes are not module paths)
                ops = tuple(("", kind, None) for kind, _ in log.failed[:3])
            self.failures.append(_Failure(label, _first_line(exc), ops))
            return None, ops


def _decomposed(program: Any, table: Any) -> Any:
    with quiet():
        return program.run_decompositions(table) if table is not None else program.run_decompositions()


def _export_routes(conv: _Converter, program: Any, batch: int | None, mode: str,
                   only: Any = None) -> tuple[Any, Any, tuple[str, ...], Any] | None:
    """Try the decomposition routes on one captured program: (model, decomposed program, rewrites, route key).

    Route keys: ``{}`` (no decomposition), ``("targeted", ops)`` (only
    ``ops``, from the default table) and ``"core-aten"`` (the default table).
    ``only`` tries that one route and nothing else.
    """
    import torch

    default = torch.export.default_decompositions()
    routes: list[Any] = [only] if only is not None else [{}]
    targeted: list[Any] = []
    rounds = 0
    while routes:
        route = routes.pop(0)
        label = f"torch.export ({mode}) + {_route_label(route)}"
        try:
            table = {op: default[op] for op in route[1]} if isinstance(route, tuple) else route
            source = _decomposed(program, None if route == "core-aten" else table)
        except Exception as exc:
            conv.failures.append(_Failure(label, _first_line(exc)))
            continue
        model, failing = conv.attempt(label, source, batch)
        if model is not None:
            return model, source, _rewrites(route), route
        if only is not None or route == "core-aten":
            continue
        # Decompose exactly what coremltools rejected (the other high-level ops stay fused), then everything.
        new = [target for _, target, _ in failing
               if isinstance(target, torch._ops.OpOverload) and target in default and target not in targeted]
        if new and rounds < MAX_TARGETED:
            rounds += 1
            targeted.extend(new)
            routes.append(("targeted", tuple(targeted)))
        else:
            routes.append("core-aten")
    return None


def _route_label(route: Any) -> str:
    if route == "core-aten":
        return "run_decompositions() (core ATen)"
    if isinstance(route, tuple):
        return "decomposed " + ", ".join(_op_label(op) for op in route[1])
    return "run_decompositions({})"


def _op_label(op: Any) -> str:
    return str(op).removesuffix(".default")


def _rewrites(route: Any) -> tuple[str, ...]:
    if route == "core-aten":
        return (CORE_ATEN,)
    if isinstance(route, tuple):
        return tuple(f"decomposed {_op_label(op)} (core-ATen table)" for op in route[1])
    return ()


def convert(job: ExportJob, compute_precision: str, fp32_ops: tuple[str, ...] = (), route: tuple[Any, ...] = (),
            source: Any = None) -> Exported:
    """Convert ``job.model`` for the profile's iOS at ``compute_precision`` ("fp32" | "fp16").

    ``fp32_ops`` names MIL op types that stay FP32 in an FP16 program (mixed
    precision). ``route`` (an earlier ``Exported.route``) repeats the route
    that converted before instead of searching again, and ``source`` (its
    ``Exported.source``) skips capturing the model again: torch.export and
    its decompositions took about half of a conversion. Raises
    UnsupportedModelError naming each attempt's failing op and module when
    no route converts.
    """
    major = min_ios(job)
    with contextlib.suppress(NotImplementedError):  # a torch.export program's module() refuses eval(); it has no mode
        job.model.eval()
    conv = _Converter(job, compute_precision, fp32_ops)
    if route and source is not None:
        path, batch, decomposition = route
        model, _ = conv.attempt(f"{path} (again)", source, batch)
        if model is not None:
            modules = _module_map(source) if path == "torch.export" else ModuleMap()
            return _exported(job, conv, model, path, batch, major, compute_precision, fp32_ops,
                             _rewrites(decomposition) if path == "torch.export" else (), modules, route, source)
        conv.failures.clear()
    modes = batch_modes(job)
    path_hint, batch_hint, decomposition_hint = route if route else (None, None, None)
    if path_hint is not None:
        modes = [batch_hint]
    for batch in modes:
        if path_hint == "jit.trace":
            break
        mode = "flexible batch" if batch is None else f"batch {batch}"
        try:
            with quiet():
                program = _capture_export(job, batch)
        except Exception as exc:
            conv.failures.append(_Failure(f"torch.export ({mode})", _first_line(exc)))
            continue
        found = _export_routes(conv, program, batch, mode, decomposition_hint)
        if found is not None:
            model, source, rewrites, decomposition = found
            return _exported(job, conv, model, "torch.export", batch, major, compute_precision, fp32_ops, rewrites,
                             _module_map(source), ("torch.export", batch, decomposition), source)
    for batch in (modes if path_hint in (None, "jit.trace") else []):
        mode = "flexible batch" if batch is None else f"batch {batch}"
        try:
            with quiet():
                traced = _capture_trace(job, batch)
        except Exception as exc:
            conv.failures.append(_Failure(f"jit.trace ({mode})", _first_line(exc)))
            continue
        model, _ = conv.attempt(f"jit.trace ({mode})", traced, batch)
        if model is not None:
            return _exported(job, conv, model, "jit.trace", batch, major, compute_precision, fp32_ops, (),
                             ModuleMap(), ("jit.trace", batch, None), traced)
    failing = _ops_text(tuple(op for f in conv.failures for op in f.ops))
    errors = " | ".join(list(dict.fromkeys(f.error for f in conv.failures))[:3])
    tried = "; ".join(f.route for f in conv.failures)
    raise UnsupportedModelError(
        f"coremltools could not convert the model for target {job.profile.name}"
        + (f": no converter handles {failing}" if failing else "") + f". Errors: {errors}. Routes tried: {tried}",
        "Rewrite the named layer with plain tensor ops (see DESIGN.md conversion pitfalls) or drop Core ML for this target",
    )


def _exported(job: ExportJob, conv: _Converter, model: Any, path: str, batch: int | None, major: str,
              compute_precision: str, fp32_ops: tuple[str, ...], rewrites: tuple[str, ...], modules: ModuleMap,
              route: tuple[Any, ...], source: Any) -> Exported:
    notes = [f.text() for f in conv.failures]
    if conv.repairs:
        rewrites = (*rewrites, f"select shape repaired (coremltools ignored cond's shape): {', '.join(conv.repairs[:5])}")
    if conv.clamped:
        rewrites = (*rewrites, f"constants beyond FP16's range clamped to +-65504 (-inf would make 0 * -inf = NaN): "
                               f"{', '.join(conv.clamped[:5])}")
    if rewrites:
        notes.append(f"converted after rewriting: {'; '.join(rewrites)}")
    if batch is not None and not job.fixed_batch:
        notes.append(f"flexible batch did not convert; the model takes batch {batch} and the session feeds it "
                     "chunks of that batch")
    return Exported(model, path, batch is None, major, compute_precision, notes, tuple(fp32_ops), rewrites, batch,
                    modules, route, source)


def save(model: Any, path: Path) -> Path:
    """Save an MLModel as ``path`` (.mlpackage folder), atomically, with reproducible bytes.

    Equal models give byte-identical packages: the random item identifiers,
    the protobuf map order and the conversion date coremltools writes are
    normalised before the package is renamed into place (``reproducible``).
    """
    from edgekit.artifact import atomic_path
    from edgekit.backends.coreml.reproducible import normalise_package

    with atomic_path(path) as tmp, quiet():
        model.save(str(tmp))
        normalise_package(tmp)
    return path
