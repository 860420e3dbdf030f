"""Build .tflite candidates for one (precision, io) request.

``build(job)`` returns every recipe that works for ``job.request``; the
pipeline validates each in LiteRT and ships the fastest that meets the
accuracy and fidelity bars. A recipe that fails is dropped, and the reason is
recorded in every surviving candidate's ``details["dropped"]``; only if none
works is an error raised. A "quantized" candidate whose weight census shows
no weight in the requested precision is dropped too, with a note.

Recipes per precision (variant names are stable, they end up in manifests):

=============  =========================  =============================================
precision      variant                    what it is
=============  =========================  =============================================
fp32           ``litert-fp32``            litert-torch, float32
fp16           ``aeq-fp16``               float16 weights (ai-edge-quantizer)
int8           ``pt2e-static``            litert-torch PT2E quantizer + torchao
                                          prepare_pt2e/convert_pt2e, calibrated
               ``aeq-static``             ai-edge-quantizer static_wi8_ai8, calibrated with
                                          running min/max, embeddings int8; float I/O kept
                                          with NO_QUANTIZE on INPUT/OUTPUT (fallback: int8
                                          I/O wrapped in QUANTIZE/DEQUANTIZE, see
                                          ``_aeq_static``); a fallback search keeps the most
                                          damaging ops out of static int8 until the fidelity
                                          bar is met (``fallback.static_search``)
               ``aeq-dynamic-wi8``        dynamic range: int8 weights, FULLY_CONNECTED / CONV
                                          multiply int8 x int8 with activations quantized per
                                          run; float between ops (``io = "float"`` only)
               ``aeq-weight-only-wi8``    int8 weights, float compute (``io = "float"`` only)
dynamic-int8   ``aeq-dynamic-wi8``        ai-edge-quantizer dynamic_wi8_afp32
               ``pt2e-dynamic``           PT2E dynamic (weights int8, activations at run time)
int4           ``aeq-dynamic-wi4``        int4 weights (OCTAV, per channel) incl. embeddings,
                                          dynamic int8 activations; ``fallback.int4_search``
                                          when it misses the bar (32-blocks, then int8 for
                                          the most damaging layers)
               ``aeq-weight-only-wi4``    int4 weights, float compute; same search (no blocks)
=============  =========================  =============================================

Measured on all-MiniLM-L6-v2 (22.7M parameters, 512 real sentences,
interleaved with FP32 in LiteRT on the 2-core x86 host): dynamic-range int8
0.26x FP32 size, cosine 0.998, 0.50x FP32 latency; weight-only int8 1.0x
latency; static int8 cosine 0.60 (attention mask and activation outliers),
1.13x latency. int4: per-channel OCTAV 0.137x size, cosine 0.93; 32-blocks
0.142x, 0.95.

Why int8 has float-activation candidates (dynamic range, weight-only): on the
host, both static recipes ran slower than FP32 on the small transformer
samples (digits-transformer: PT2E 1.58x, ai-edge-quantizer 2.77x), because the
added QUANTIZE/DEQUANTIZE ops and per-op overheads outweigh the arithmetic
saved on models this small, and static int8 of trained transformers breaks on
activation outliers. Dynamic range keeps activations float between ops but
multiplies in int8 (XNNPACK's qd8 kernels): it ran the encoder at 0.50x FP32.
Weight-only int8 runs at 0.99-1.02x FP32 with unchanged accuracy; its config
says ``"compute": "float32"``. The selection (``edgekit.select``) picks the
fastest candidate that clears the bars.

``options = {integer_only = true}`` on an int8 request drops both
float-activation candidates: dynamic range quantizes activations on the CPU
per run and passes float tensors between ops, which integer-only delegates
(NPU, DSP, Edge TPU) cannot run. Static int8 then ships even where it is
slower than FP32 on the host, and its fallback search does not run (keeping
ops float would break the promise); the report says so.

``io = "int8"`` (full-integer, for microcontrollers) keeps only candidates
whose float inputs and outputs are all int8-quantized; PT2E gives that for
CNNs, and ai-edge-quantizer's static recipe does when I/O is not excluded.
With ``io = "float"``, PT2E's int8 I/O (litert-torch has no option to keep it
float) is wrapped in QUANTIZE/DEQUANTIZE ops by ``interface.float_interface``,
so every candidate honours the requested interface.

Every candidate is loaded in LiteRT (child process) and run once on the
example inputs before it is returned: some recipes write models that LiteRT
refuses at prepare time, and those are dropped with LiteRT's message. The
same process reports which ops the XNNPACK delegate took, for
``details["coverage"]`` (``coverage.measure``: weights by stored precision,
compute ops on the fast path and on integer kernels, float ops and why, with
their PyTorch modules from litert-torch's tensor names, ``names``).

Fidelity: when the request has a fidelity bar (``job.fidelity``) the static
and int4 candidates are judged on up to 64 calibration samples against the
FP32 torch reference (``job.reference``); one that misses runs its fallback
search and records ``details["fallback"]`` (bar, before, after, rounds, the
signal, the ops kept float or raised to int8 with their modules) and
``config["kept_float_for_fidelity"]`` / ``config["raised_to_int8_for_fidelity"]``.

Recurrent layers: litert-torch unrolls ``nn.GRU`` / ``nn.LSTM`` into
FULLY_CONNECTED ops over the time steps (no fused sequence op, no WHILE), all
reading the layer's shared weight tensors, so every int8 / int4 recipe
quantizes them like linear layers.

Fixed batch: when ``job.fixed_batch`` is set the model is exported at exactly
that batch, calibration runs in feeds of that batch (the last padded), and
the runtime session feeds blocks of it; otherwise the export is at batch 1.

Microcontroller profiles: the model is first rewritten on a copy into ops
TFLite Micro has kernels for (``micro_rewrite``; the records land in
``config["rewrites"]`` and ``details["micro"]["rewrites"]``), then each
candidate gets ``details["micro"]`` from ``micro.check`` (op set, flash,
arena) plus ``tflm_vs_litert``: calibration samples run in TFLite Micro itself
and compared with LiteRT, which is where the pipeline validates. Integer
inputs (token ids, masks) stay integers (int32): quantizing ids to int8 would
be meaningless, so ``io = "int8"`` applies to float tensors and
``details["io_quantization"]["integer_inputs"]`` says which inputs are fed as is.

Other profiles, for precisions other than fp32: the float model is timed
against every candidate in one interleaved run (``fp32_timing``) and each
candidate gets ``details["vs_fp32"]``, which ``select.choose`` uses to avoid
shipping something slower than FP32.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.artifact import Artifact, atomic_write_bytes
from edgekit.backends import ExportJob, parse_options
from edgekit.backends.candidates import time_against_fp32
from edgekit.backends.model_key import model_key
from edgekit.backends.tflite import (
    coverage,
    export,
    fallback,
    fp32_timing,
    interface,
    micro,
    micro_rewrite,
    quantize,
    reproducible,
)
from edgekit.backends.tflite.inspect import census_summary, io_description, min_runtime_version, parse, weight_census
from edgekit.backends.tflite.names import ModuleIndex
from edgekit.errors import DataError, EdgekitError, InternalError, UnsupportedModelError

KEPT_FLOAT = "kept float for fidelity by the fallback search"


@dataclass
class Made:
    """What a recipe made: the bytes, the config that made them, details it knows, and ops it kept float."""

    data: bytes
    config: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    kept_float: dict[str, str] = field(default_factory=dict)  # output tensor name -> why its op stayed float


# Float conversions of this process, by model content: one build converts once for all its requests
# (int8 and fp16 for one target, several targets): litert-torch takes ~45 s on a 224x224 MobileNetV2.
_FLOAT_MODELS: dict[str, bytes] = {}
_FLOAT_MODELS_KEPT = 4


@dataclass
class _Context:
    """What the recipes share for one job: the wrapped model, inputs at the export batch, the float .tflite,
    the calibration (once), and the LiteRT process that judges fallback rounds."""

    job: ExportJob
    module: Any
    inputs: dict[str, Any]
    rewrites: tuple[str, ...] = ()
    integer_only: bool = False
    _float: bytes | None = None
    _samples: list[dict[str, Any]] | None = None
    _qsvs: dict[tuple[quantize.Rule, ...], dict[str, Any]] = field(default_factory=dict)
    _modules: ModuleIndex | None = None
    _judge: fallback.Judge | None = None
    probes: dict[tuple[int, ...], float] = field(default_factory=dict)  # int4 sensitivity, shared by both int4 recipes

    @property
    def target(self) -> str:
        return self.job.profile.name

    @property
    def batch(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 1

    def float_model(self) -> bytes:
        if self._float is None:
            # The output names are the signature's: two jobs of one model naming them apart share nothing.
            key = model_key(self.module, self.inputs, (*self.rewrites, "outputs", *self.job.output_names))
            if key not in _FLOAT_MODELS:
                # Normalised here, so every recipe quantizing this float model inherits stable names.
                _FLOAT_MODELS[key] = reproducible.stable_names(
                    export.convert_float(self.module, self.inputs, self.target))
                while len(_FLOAT_MODELS) > _FLOAT_MODELS_KEPT:
                    _FLOAT_MODELS.pop(next(iter(_FLOAT_MODELS)))
            self._float = _FLOAT_MODELS[key]
        return self._float

    def torch_samples(self) -> list[dict[str, Any]]:
        if self._samples is None:
            self._samples = export.calibration_samples(self.job.calibration, self.inputs)
        return self._samples

    def calibration_count(self) -> int:
        return min(len(next(iter(self.job.calibration.values()))), export.MAX_CALIBRATION_SAMPLES)

    def tflite_samples(self) -> list[dict[str, np.ndarray]]:
        """Calibration feeds for ai-edge-quantizer, in the .tflite's input dtypes (int64 -> int32)."""
        samples = self.torch_samples()  # first, so missing data fails before any conversion work
        inputs, _ = io_description(parse(self.float_model()))
        dtypes = {d["name"]: d["dtype"] for d in inputs}
        return [{k: v.numpy().astype(dtypes.get(k, v.numpy().dtype)) for k, v in s.items()} for s in samples]

    def qsvs(self, rules: tuple[quantize.Rule, ...]) -> dict[str, Any]:
        """Calibrated ranges for ``rules``, computed once per rule set (the fallback rounds reuse them)."""
        if rules not in self._qsvs:
            self._qsvs[rules] = quantize.calibrate(self.float_model(), rules, self.tflite_samples())
        return self._qsvs[rules]

    def modules(self) -> ModuleIndex | None:
        if self._modules is None:
            try:
                self._modules = ModuleIndex(self.module)
            except Exception:  # naming is a courtesy; a model it cannot walk still builds
                return None
        return self._modules

    def can_judge(self) -> bool:
        """Whether fidelity can be measured here: a bar, a reference, and calibration data that matches it."""
        job = self.job
        if not job.fidelity.required or not job.reference or any(name not in job.calibration for name in self.inputs):
            return False
        return all(len(job.calibration[name]) == len(job.reference[0]) for name in self.inputs)

    def judge(self) -> fallback.Judge:
        if self._judge is None:
            n = fallback.FIDELITY_SAMPLES
            feeds = {name: np.asarray(self.job.calibration[name][:n]) for name in self.inputs}
            self._judge = fallback.Judge(self.job.workdir, feeds, [np.asarray(r)[:n] for r in self.job.reference])
        return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()
            self._judge = None


Recipe = Callable[[_Context], Made]


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _tools(config: dict[str, Any]) -> dict[str, Any]:
    config["tool"] = f"ai-edge-quantizer {_version('ai-edge-quantizer')}"
    config["float_model"] = f"litert-torch {_version('litert-torch')}"
    return config


def _litert_fp32(ctx: _Context) -> Made:
    return Made(ctx.float_model(), {"tool": f"litert-torch {_version('litert-torch')}", "recipe": "float32"})


def _float_interface(data: bytes, config: dict[str, Any]) -> bytes:
    """Wrap int8 I/O in QUANTIZE/DEQUANTIZE ops and say so in ``config``."""
    data, rewritten = interface.float_interface(data)
    if rewritten:
        config["float_interface"] = {
            "added": "QUANTIZE after each float input, DEQUANTIZE before each float output",
            "tensors": rewritten,
        }
    return data


def _aeq(recipe: str, **extra: Any) -> Recipe:
    """An ai-edge-quantizer recipe that needs no calibration (fp16, dynamic range, weight-only int8)."""

    def make(ctx: _Context) -> Made:
        data, config = quantize.quantize_recipe(ctx.float_model(), recipe)
        config.update(extra)
        return Made(data, _tools(config))

    return make


def _aeq_static(wrap_interface: bool = False) -> Recipe:
    """ai-edge-quantizer's static int8, then the fallback search if it misses the fidelity bar.

    For ``io = "float"``, the primary form keeps the interface float with
    NO_QUANTIZE on INPUT/OUTPUT. ``wrap_interface`` is the fallback: quantize
    I/O too, then add QUANTIZE/DEQUANTIZE at the boundary. It exists because
    NO_QUANTIZE on a tensor that is both a graph output and a FULLY_CONNECTED
    input (an encoder returning logits and the pooled embedding) yields a
    FULLY_CONNECTED with float input and int8 output, which LiteRT refuses at
    prepare time.
    """

    def make(ctx: _Context) -> Made:
        request = ctx.job.request
        float_io = request.io == "float" and not wrap_interface
        base = quantize.static_rules(embeddings_int8=ctx.job.profile.device.kind != "microcontroller")
        rules = base + quantize.io_rules(base, float_io)
        qsvs = ctx.qsvs(rules)
        config: dict[str, Any] = {"recipe": "static_wi8_ai8", "rules": [r.as_dict() for r in rules],
                                  "calibration_update": "min_max", "calibration_samples": ctx.calibration_count()}
        if float_io:
            config["io_rule"] = "NO_QUANTIZE on INPUT and OUTPUT"

        def finish(data: bytes) -> bytes:
            return _float_interface(data, config) if wrap_interface and request.io == "float" else data

        made = Made(finish(quantize.quantize(ctx.float_model(), rules, qsvs)), _tools(config))
        _static_fallback(ctx, made, rules, qsvs, finish)
        return made

    return make


def _static_fallback(ctx: _Context, made: Made, rules: tuple[quantize.Rule, ...], qsvs: dict[str, Any],
                     finish: Callable[[bytes], bytes]) -> None:
    """Judge a static candidate on calibration data; if it misses the bar, run ``fallback.static_search``."""
    if not ctx.can_judge():
        return
    bar = ctx.job.fidelity
    before = ctx.judge().metrics(made.data)
    if fallback.tightened(bar).met_by(before):
        made.details["fidelity_on_calibration"] = before
        return
    if ctx.integer_only:
        made.details["fallback"] = {"bar": bar.as_dict(), "before": before, "met": False, "rounds": 0,
                                    "skipped": "integer_only: keeping ops float would break the integer-only promise"}
        return
    micro_target = ctx.job.profile.device.kind == "microcontroller"
    result = fallback.static_search(
        ctx.float_model(), rules, qsvs, ctx.tflite_samples(), ctx.judge(), bar, before, finish, ctx.modules(),
        weights_dynamic=not micro_target,  # TFLite Micro has no hybrid (float x int8) kernels
    )
    made.data = result.data
    made.config["rules"] = [r.as_dict() for r in result.rules]
    made.config["kept_float_for_fidelity"] = result.names
    made.details["fallback"] = result.record
    made.kept_float = {name: KEPT_FLOAT for name in result.outputs}


def _int4(mode: str) -> Recipe:
    """int4 weights (OCTAV, per channel, embeddings included); ``fallback.int4_search`` if the bar is missed."""

    def make(ctx: _Context) -> Made:
        rules = quantize.int4_rules(mode)
        data = quantize.quantize(ctx.float_model(), rules)
        config = _tools({"recipe": f"{mode}_wi4_afp32", "rules": [r.as_dict() for r in rules]})
        if mode == "weight_only":
            config["compute"] = "float32: int4 weights are dequantized before each op"
        made = Made(data, config)
        if not ctx.can_judge():
            return made
        bar = ctx.job.fidelity
        before = ctx.judge().metrics(data)
        if fallback.tightened(bar).met_by(before):
            made.details["fidelity_on_calibration"] = before
            return made
        result = fallback.int4_search(ctx.float_model(), mode, data, before, ctx.judge(), bar, ctx.modules(),
                                      probes=ctx.probes)
        made.data = result.data
        made.config["rules"] = [r.as_dict() for r in result.rules]
        made.config["raised_to_int8_for_fidelity"] = result.names
        made.details["fallback"] = result.record
        return made

    return make


def _pt2e(dynamic: bool) -> Recipe:
    def make(ctx: _Context) -> Made:
        samples = [] if dynamic else ctx.torch_samples()
        data, notes = export.convert_pt2e(ctx.module, ctx.inputs, samples, ctx.target, dynamic=dynamic)
        config: dict[str, Any] = {
            "tool": f"litert-torch {_version('litert-torch')} + torchao {_version('torchao')}",
            "recipe": "pt2e-dynamic-int8" if dynamic else "pt2e-static-int8",
            "quantizer": "PT2EQuantizer(get_symmetric_quantization_config(is_per_channel=True"
            + (", is_dynamic=True))" if dynamic else "))"),
            "attempts": notes["attempts"],
        }
        if not dynamic:
            config["calibration_samples"] = ctx.calibration_count()
            config["activation_observer"] = "HistogramObserver"
        if "retried_after" in notes:
            config["retried_after"] = notes["retried_after"]
        if ctx.job.request.io == "float":  # PT2E folds the I/O quantization in; restore a float interface
            data = _float_interface(data, config)
        return Made(data, config)

    return make


@dataclass(frozen=True)
class RecipeSpec:
    """A named recipe, and optionally a second way to make the same variant if the first will not run."""

    variant: str
    make: Recipe
    fallback: Recipe | None = None
    # Recipes that keep float activations can never give full-integer I/O: not made for io = "int8".
    float_io_only: bool = False
    # Recipes whose tensors between ops stay float (weight-only, dynamic range): not made when options.integer_only.
    float_activations: bool = False


_DYNAMIC_COMPUTE = ("int8 x int8 in FULLY_CONNECTED / CONV / BATCH_MATMUL with activations quantized per run by the "
                    "kernel; float between ops")
_WEIGHT_ONLY_COMPUTE = "float32: LiteRT dequantizes the int8 weights once, when it prepares the model"

RECIPES: dict[str, list[RecipeSpec]] = {
    "fp32": [RecipeSpec("litert-fp32", _litert_fp32)],
    "fp16": [RecipeSpec("aeq-fp16", _aeq("fp16"))],
    "int8": [
        RecipeSpec("pt2e-static", _pt2e(dynamic=False)),
        RecipeSpec("aeq-static", _aeq_static(), fallback=_aeq_static(wrap_interface=True)),
        RecipeSpec("aeq-dynamic-wi8", _aeq("dynamic_wi8_afp32", compute=_DYNAMIC_COMPUTE),
                   float_io_only=True, float_activations=True),
        RecipeSpec("aeq-weight-only-wi8", _aeq("weight_only_wi8_afp32", compute=_WEIGHT_ONLY_COMPUTE),
                   float_io_only=True, float_activations=True),
    ],
    "dynamic-int8": [RecipeSpec("aeq-dynamic-wi8", _aeq("dynamic_wi8_afp32", compute=_DYNAMIC_COMPUTE)),
                     RecipeSpec("pt2e-dynamic", _pt2e(dynamic=True))],
    "int4": [
        RecipeSpec("aeq-dynamic-wi4", _int4("dynamic")),
        RecipeSpec("aeq-weight-only-wi4", _int4("weight_only")),
    ],
}


def _io_quantization(described: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in described:
        q = d["quantization"]
        if q is not None and d["dtype"] in ("int8", "uint8", "int16"):
            out[d["name"]] = {"dtype": d["dtype"], "scale": q["scale"], "zero_point": q["zero_point"]}
    return out


def _integer_inputs(described: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Inputs that are integers by nature (ids, masks): not quantized, fed as is in their dtype."""
    return {
        d["name"]: {"dtype": d["dtype"], "fed_as": "integers as is (no scale or zero point); torch int64 becomes int32"}
        for d in described
        if d["quantization"] is None and d["dtype"] in ("int32", "int64", "int16", "int8", "uint8")
    }


def _describe(data: bytes, job: ExportJob, batch: int) -> dict[str, Any]:
    """Details computed from the .tflite bytes: census, float layers, interface, I/O quantization."""
    parsed = parse(data)
    inputs, outputs = io_description(parsed)
    census = weight_census(parsed)
    io_q = {"inputs": _io_quantization(inputs), "outputs": _io_quantization(outputs)}
    floating = [d["name"] for d in inputs + outputs if d["dtype"] in ("float32", "float16")]
    details: dict[str, Any] = {
        "weights": census_summary(census),
        "float_layers": census["float_layers"],
        "ops": sorted(set(parsed.op_names)),
        "io": "int8" if (io_q["inputs"] or io_q["outputs"]) and not floating else ("mixed" if io_q["inputs"] or io_q["outputs"] else "float"),
        "interface": {
            "inputs": [{k: d[k] for k in ("name", "shape", "dtype")} for d in inputs],
            "outputs": [{k: d[k] for k in ("name", "shape", "dtype")} for d in outputs],
        },
        # Signature names follow job.inputs / job.output_names; tensor names are litert-torch's.
        "signature_tensors": {d["name"]: d["tensor"] for d in inputs + outputs},
        "batch": batch,
        # What the converter recorded (TFLite's own runtime versioning); None falls back to the registry's figure.
        **({"min_runtime_version": found} if (found := min_runtime_version(parsed)) else {}),
        "batch_handling": (f"exported at the model's fixed batch {batch}; the runtime session feeds blocks of {batch} "
                           "samples, padding the last" if job.fixed_batch else
                           "exported at batch 1; the runtime session loops over larger batches"),
    }
    if io_q["inputs"] or io_q["outputs"]:
        if integers := _integer_inputs(inputs):
            io_q["integer_inputs"] = integers  # so device code knows these take ids, not quantized floats
        details["io_quantization"] = io_q
    names_ok = [d["name"] for d in inputs] == [s.name for s in job.inputs] and [d["name"] for d in outputs] == list(job.output_names)
    if not names_ok:
        details["io_name_mapping"] = {
            "inputs": dict(zip([s.name for s in job.inputs], [d["name"] for d in inputs])),
            "outputs": dict(zip(job.output_names, [d["name"] for d in outputs])),
        }
    return details


def _full_integer_problem(details: dict[str, Any]) -> str | None:
    """Why a candidate fails ``io = "int8"`` (a float input or output), or None."""
    quantized = set(details.get("io_quantization", {}).get("inputs", {})) | set(details.get("io_quantization", {}).get("outputs", {}))
    floating = [
        d["name"]
        for d in details["interface"]["inputs"] + details["interface"]["outputs"]
        if d["dtype"].startswith("float") and d["name"] not in quantized
    ]
    return f"not full-integer: {', '.join(floating)} stayed float" if floating else None


def _smoke_test(path: Any, job: ExportJob) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """Load the candidate in LiteRT (child process), run the example inputs once, read its delegation.

    Some recipes write models LiteRT refuses at prepare time (seen: static
    ai-edge-quantizer on an embedding model gave a FULLY_CONNECTED with int8
    input and float output); dropping them here keeps the candidate list
    honest. The max abs difference from torch is a quick sanity figure, not
    the validation the pipeline does on held-out data. The delegation (which
    ops XNNPACK took) is None if this runtime cannot report it.
    """
    import torch

    from edgekit.backends.tflite.runtime import open_session

    feeds = {spec.name: t.detach().cpu().numpy() for spec, t in zip(job.inputs, job.example_inputs)}
    with open_session(path) as session:
        outputs = session.run(feeds)
        try:
            delegation: list[dict[str, Any]] | None = session.delegation()
        except EdgekitError:  # tflite-runtime / tf.lite builds without the node-level view
            delegation = None
    with torch.no_grad():
        expected = export.flatten_outputs(job.model(*job.example_inputs))
    errors = []
    for got, want in zip(outputs, expected):
        want_np = want.detach().float().cpu().numpy()
        if got.shape != want_np.shape:
            raise ValueError(f"output shape {list(got.shape)} differs from torch's {list(want_np.shape)}")
        errors.append(float(np.max(np.abs(got.astype(np.float32) - want_np))) if got.size else 0.0)
    return {"example_max_abs_error": errors}, delegation


# What a candidate's census must hold for its precision (edgekit.coverage counts narrower storage too).
_QUANTIZED_PRECISIONS = ("fp16", "int8", "dynamic-int8", "int4")


def _candidate(ctx: _Context, variant: str, make: Recipe) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Make, check and write one candidate; raise with the reason if it is not usable."""
    job, request = ctx.job, ctx.job.request
    made = make(ctx)
    # Every candidate is written, checked and described with the bytes of a model file at any path.
    data, config = reproducible.stable_names(made.data), made.config
    details = _describe(data, job, ctx.batch)
    details.update(made.details)
    if request.io == "int8" and (problem := _full_integer_problem(details)):
        raise _Dropped(problem)
    if job.profile.device.kind == "microcontroller":
        details["micro"] = micro.check(data, job.profile.name)
        if ctx.rewrites:
            details["micro"]["rewrites"] = list(ctx.rewrites)
    if ctx.rewrites:
        config["rewrites"] = list(ctx.rewrites)
    config.update(precision=request.precision, io=request.io, export_batch=ctx.batch)
    if request.precision == "fp32" and not ctx.rewrites:
        # The FP32 program is held to the FP32 model by validation's float-agreement check (the microcontroller
        # rewrites approximate ops on purpose, so their programs are judged by the quality bars alone; FP16 is
        # judged by its quality bar, as in the ONNX backend).
        details["float_agreement"] = "fp32"
    path = job.workdir / f"{job.stem}.{variant}.tflite"
    atomic_write_bytes(path, data)
    try:
        details["smoke"], delegation = _smoke_test(path, job)
    except (EdgekitError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise _Dropped(f"LiteRT cannot run it: {exc}") from None
    parsed = parse(data)
    details["coverage"] = coverage.measure(parsed, weight_census(parsed), delegation, request.precision,
                                           config.get("recipe", variant), ctx.modules(), made.kept_float)
    if request.precision in _QUANTIZED_PRECISIONS and details["coverage"]["weights_share"] == 0:
        path.unlink(missing_ok=True)
        stored = ", ".join(f"{k} {v}" for k, v in details["weights"]["by_precision"].items()) or "no weights"
        raise _Dropped(f"nothing quantized: the census shows no weight stored in {request.precision} ({stored})")
    if "arena_bytes" in details.get("micro", {}) and details["micro"].get("method", "").startswith("measured"):
        try:
            details["micro"]["tflm_vs_litert"] = _tflm_vs_litert(ctx, path, data, details["micro"]["arena_bytes"])
        except EdgekitError:
            path.unlink(missing_ok=True)
            raise
    return path, config, details


# Samples run through TFLite Micro and LiteRT to compare them; TFLM's reference kernels are slow in Python.
TFLM_CHECK_SAMPLES = 32


def _tflm_vs_litert(ctx: _Context, path: Any, data: bytes, arena_bytes: int) -> dict[str, Any]:
    """Run calibration samples in TFLite Micro at the measured arena and compare with LiteRT.

    The pipeline validates accuracy in LiteRT; this shows the device's own
    runtime computes the same thing. A TFLM failure here is a model the
    microcontroller cannot run, so it raises UnsupportedModelError.
    """
    from edgekit.backends.tflite.runtime import open_session

    samples = ctx.torch_samples()[: max(1, TFLM_CHECK_SAMPLES // ctx.batch)]
    feeds = {name: np.concatenate([s[name].numpy() for s in samples]) for name in samples[0]}
    with open_session(path) as session:
        litert = session.run(feeds)
    try:
        tflm = micro.run(data, feeds, arena_bytes)
    except RuntimeError as exc:
        raise UnsupportedModelError(
            f"TFLite Micro cannot run the model for target '{ctx.target}': {exc}",
            "Use full-integer (int8) quantization with int8 I/O, or replace the op the message names",
        ) from None
    return micro.agreement(tflm, litert, data)


class _Dropped(Exception):
    """A candidate that was made but does not fit the request or does not run."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EdgekitError):
        return exc.problem  # the fix is given once, by the error build() raises
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text and not isinstance(exc, _Dropped) else text


def _time_against_fp32(ctx: _Context, made: list[tuple[str, Any, dict[str, Any], dict[str, Any]]]) -> None:
    """Time the float model and every candidate in one interleaved run; add ``details["vs_fp32"]``.

    The float model is written beside the candidates but is not one. A
    timing failure leaves the candidates without the figure (the selection
    then falls back to whatever FP32 latency the pipeline has) rather than
    failing the build: the candidates themselves already ran.
    """
    job = ctx.job
    reference = job.workdir / f"{job.stem}.fp32-reference.tflite"
    feeds = {name: t.detach().cpu().numpy() for name, t in ctx.inputs.items()}
    try:
        atomic_write_bytes(reference, ctx.float_model())
    except (EdgekitError, ValueError) as exc:
        reference.unlink(missing_ok=True)
        for _, _, _, details in made:
            details["vs_fp32"] = {"error": _reason(exc)}
        return
    try:
        timings = time_against_fp32(reference, [path for _, path, _, _ in made], feeds, fp32_timing)
    finally:
        reference.unlink(missing_ok=True)
    for (_, _, _, details), vs in zip(made, timings):
        details["vs_fp32"] = vs


def _integer_only(job: ExportJob) -> bool:
    """``options.integer_only`` of the request (validated: unknown keys and wrong types are ConfigErrors)."""
    where = f"target {job.profile.name} {job.request.label}"
    return parse_options("tflite", dict(job.request.options), job.request.precision, where).integer_only


def build(job: ExportJob, variants: Collection[str] | None = None) -> list[Artifact]:
    """Export ``job.model`` to TFLite at ``job.request.precision``; one Artifact per working recipe.

    ``variants`` limits the recipes to those names (all of the precision's by default).
    """
    request = job.request
    if request.precision not in RECIPES:
        raise InternalError(f"the tflite backend has no recipe for precision '{request.precision}'")
    known = {spec.variant for spec in RECIPES[request.precision]}
    if variants is not None and not set(variants) <= known:
        raise InternalError(f"unknown TFLite {request.precision} variant(s) {sorted(set(variants) - known)}; known: {sorted(known)}")
    if request.io == "int8" and request.precision != "int8":
        raise UnsupportedModelError(
            f"full-integer I/O (io = \"int8\") needs precision int8, but target '{job.profile.name}' asks for {request.precision}",
            'Set precision = "int8" for this artifact in the profile',
        )
    integer_only = _integer_only(job)
    names = [spec.name for spec in job.inputs]
    module = export.NamedIO(job.model, names, job.output_names).eval()
    # A fixed-batch model refuses any other batch: export at exactly that one.
    inputs = export.at_batch(job.example_inputs, names, job.fixed_batch or 1)
    rewrites: list[str] = []
    if job.profile.device.kind == "microcontroller":
        # Rewrites change the numbers a little, so only targets that need them get them;
        # validation against the original torch model measures what they cost.
        module, rewrites = micro_rewrite.for_microcontroller(module, inputs, job.profile.name)
    ctx = _Context(job, module, inputs, tuple(rewrites), integer_only=integer_only)
    if request.precision == "int8":
        # Static int8 needs calibration data; refuse missing or misshapen data before any
        # conversion, rather than let the weight-only candidate (which needs none) ship alone.
        ctx.torch_samples()
    try:
        made, dropped, errors = _make_all(ctx, variants)
        if not made:
            _raise_none_made(job, dropped, errors)
        if request.precision != "fp32" and job.profile.device.kind != "microcontroller":
            _time_against_fp32(ctx, made)
    finally:
        ctx.close()

    artifacts = []
    for variant, path, config, details in made:
        if dropped:
            details["dropped"] = dict(dropped)
        artifacts.append(Artifact(path=path, format="tflite", precision=request.precision, variant=variant, config=config, details=details))
    return artifacts


def _make_all(ctx: _Context, variants: Collection[str] | None = None,
              ) -> tuple[list[tuple[str, Any, dict[str, Any], dict[str, Any]]], dict[str, str], list[BaseException]]:
    """Every recipe of the request that applies: (made, dropped reasons, errors)."""
    request = ctx.job.request
    made: list[tuple[str, Any, dict[str, Any], dict[str, Any]]] = []
    dropped: dict[str, str] = {}
    errors: list[BaseException] = []
    for spec in RECIPES[request.precision]:
        if variants is not None and spec.variant not in variants:
            continue
        if (spec.float_io_only and request.io == "int8") or (spec.float_activations and ctx.integer_only):
            continue
        attempts = [spec.make] + ([spec.fallback] if spec.fallback is not None else [])
        reasons = []
        for number, make in enumerate(attempts):
            try:
                path, config, details = _candidate(ctx, spec.variant, make)
            except Exception as exc:  # one recipe's failure (even a converter bug) must not sink the others
                if not isinstance(exc, (_Dropped, EdgekitError)):
                    exc = InternalError(f"{spec.variant} failed: {_reason(exc)}")
                errors.append(exc)
                reasons.append(_reason(exc))
                if isinstance(exc, _Dropped) and exc.args and str(exc.args[0]).startswith("nothing quantized"):
                    break  # another way to make the same recipe quantizes the same weights
                continue
            if number:
                config["fallback_after"] = reasons[-1]
            made.append((spec.variant, path, config, details))
            break
        else:
            dropped[spec.variant] = " | then the fallback: ".join(reasons)
            continue
        if reasons and spec.variant not in {v for v, *_ in made}:
            dropped[spec.variant] = reasons[-1]
    return made, dropped, errors


def _raise_none_made(job: ExportJob, dropped: dict[str, str], errors: list[BaseException]) -> None:
    for kind in (DataError, UnsupportedModelError):
        first = next((e for e in errors if isinstance(e, kind)), None)
        if first is not None:
            raise first
    reasons_text = "; ".join(f"{v}: {r}" for v, r in dropped.items())
    if job.request.io == "int8":
        raise UnsupportedModelError(
            f"no TFLite recipe gave a full-integer (int8 input and output) model for target '{job.profile.name}' ({reasons_text})",
            'Check the model\'s inputs are float tensors that can be quantized, or use io = "float"',
        )
    if reasons_text and all(r.startswith("nothing quantized") for r in dropped.values()):
        raise UnsupportedModelError(
            f"no TFLite {job.request.precision} recipe quantized any weight of this model for target "
            f"'{job.profile.name}' ({reasons_text})",
            "Build another precision for this target; the model's weights are in ops these recipes do not quantize",
        )
    raise InternalError(f"every TFLite {job.request.precision} recipe failed for target '{job.profile.name}' ({reasons_text})")
