"""Runs one function of a parsed ML Program on numpy inputs.

Constants (``const`` and every ``constexpr_*`` op) are evaluated once, when
the interpreter is built; fp16 weights also get a read-only float32 copy then,
so no run converts them again. ``run`` walks the remaining ops in program
order. Each op computes in float32 (``OpContext.x`` promotes fp16 inputs) and
its outputs are rounded to the dtypes the program declares, which is what
makes an FP16 program behave like one. Ops that only move or select values
(``VALUE_PRESERVING``) skip the rounding when all their float inputs are
fp16: their outputs are fp16 values already, bit for bit.

``run(feeds, overrides, observe)``: ``overrides`` swaps named constants for
one run, ``observe(op, env)`` sees every value after each op (the fidelity
search in ``sensitivity.py`` uses both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.backends.coreml.emulator.dtypes import FLOATS, numpy_dtype
from edgekit.backends.coreml.emulator.fp16 import round_to_fp16
from edgekit.backends.coreml.emulator.ops import REGISTRY
from edgekit.backends.coreml.emulator.program import Function, Operation, Package
from edgekit.errors import ArtifactError, DataError, EdgekitError, UnsupportedModelError

_MISSING = object()

# Ops whose outputs are input values (moved, selected, compared) or their fp16 constants: when every float
# input is fp16, the outputs are fp16 values already and rounding them again is skipped (it changes no
# bit and cost a fifth of a MobileNetV2 run, mostly in its ReLU6 clips).
VALUE_PRESERVING = frozenset({
    "reshape", "reshape_like", "transpose", "concat", "stack", "split", "squeeze", "expand_dims", "flatten2d",
    "slice_by_index", "slice_by_size", "gather", "gather_along_axis", "gather_nd", "tile", "reverse",
    "pixel_shuffle", "pixel_unshuffle", "pad", "relu", "clip", "threshold", "select", "max_pool", "reduce_max",
    "reduce_min", "maximum", "minimum", "identity",
})


class OpContext:
    """What an op implementation sees: its inputs, attributes and declared outputs."""

    def __init__(self, op: Operation, function: str, env: dict[str, Any],
                 promoted: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.op = op
        self.function = function
        self._env = env
        self._promoted = promoted or {}

    def where(self) -> str:
        return self.op.where(self.function)

    def has(self, param: str) -> bool:
        return param in self.op.inputs or param in self.op.attributes

    def _resolve(self, arg: Any) -> Any:
        if arg.name is None:
            return arg.value
        try:
            return self._env[arg.name]
        except KeyError:
            raise ArtifactError(
                f"{self.where()} reads '{arg.name}', which no earlier op produces", "The program is malformed; rebuild it"
            ) from None

    def raw(self, param: str, default: Any = _MISSING) -> Any:
        """Input ``param`` as stored (fp16 stays fp16); iOS 16/17 constexpr attributes count as inputs."""
        if param in self.op.inputs:
            args = self.op.inputs[param]
            if len(args) != 1:
                raise ArtifactError(f"{self.where()}: input '{param}' has {len(args)} arguments, expected 1", "Rebuild")
            return self._resolve(args[0])
        if param in self.op.attributes:
            return self.op.attributes[param]
        if default is _MISSING:
            raise ArtifactError(f"{self.where()} lacks its required input '{param}'", "The program is malformed; rebuild it")
        return default

    def x(self, param: str = "x", default: Any = _MISSING) -> Any:
        """Input ``param`` with floating point promoted to float32 (the compute precision)."""
        value = self.raw(param, default)
        if isinstance(value, np.ndarray) and value.dtype in (np.float16, np.float64):
            cached = self._promoted.get(id(value))
            if cached is not None and cached[0] is value:
                return cached[1]
            return value.astype(np.float32)
        if isinstance(value, np.floating):
            return np.float32(value)
        return value

    def many(self, param: str) -> list[Any]:
        """All arguments of a variadic input (``concat``'s values)."""
        return [self._to32(self._resolve(a)) for a in self.op.inputs.get(param, ())]

    @staticmethod
    def _to32(value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype in (np.float16, np.float64):
            return value.astype(np.float32)
        return value

    def scalar(self, param: str, default: Any = _MISSING) -> Any:
        """A scalar input as a Python value (int, float, bool or str)."""
        value = self.raw(param, default)
        if isinstance(value, np.ndarray):
            if value.size != 1:
                raise ArtifactError(f"{self.where()}: '{param}' should be a scalar, got shape {value.shape}", "Rebuild")
            return value.reshape(()).item()
        if isinstance(value, np.generic):
            return value.item()
        return value

    def ints(self, param: str, default: Any = _MISSING) -> list[int] | None:
        """An integer vector input as a list (``None`` when absent and the default is ``None``)."""
        value = self.raw(param, default)
        if value is None:
            return None
        return [int(v) for v in np.asarray(value).reshape(-1)]

    def out_dtype(self, index: int = 0) -> str:
        return self.op.outputs[index][1].dtype


def _round_to(value: Any, dtype: str, exact_storage: bool, already_fp16: bool = False) -> np.ndarray:
    """Round/cast an op result to its declared MIL dtype (fp32 math → fp16 storage, etc.).

    Activations of FP16 programs are rounded to fp16 values but kept in float32
    arrays (``fp16.round_to_fp16``, same bits as a float16 round trip, several
    times faster); constants and program outputs are stored as real float16.
    """
    array = np.asarray(value)
    if dtype == "string":
        return array
    if dtype == "fp16" and not exact_storage and array.dtype == np.float32:
        return array if already_fp16 else round_to_fp16(array)
    target = numpy_dtype(dtype)
    if array.dtype == target:
        return array
    if dtype in FLOATS or array.dtype.kind in "biu" or dtype == "bool":
        return array.astype(target)
    # float → integer outputs: the op computed an integer-valued float (shape math, argmax)
    return np.trunc(array).astype(target)


class Interpreter:
    """Executes ``function`` of ``package``; build once, ``run`` many times."""

    def __init__(self, package: Package, function: str | None = None) -> None:
        self.package = package
        self.function: Function = package.functions[function] if function else package.main
        self.constants: dict[str, Any] = {}
        self.steps: list[Operation] = []
        for op in self.function.operations:
            if op.type == "const" or op.type.startswith("constexpr_"):
                self._execute(op, self.constants, exact_storage=True)
            else:
                self.steps.append(op)
        # Checked up front so that a model with an unknown op fails at load, naming the op.
        for op in self.steps:
            self._implementation(op)
        self._fp16_exact = self._value_preserving_steps()
        # fp16 weights promoted to float32 once, not at every run (converting MobileNetV2's 3.5 M weights
        # cost ~20 ms a run); read-only, so an op that wrote into its input would fail loudly.
        self._promoted: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for value in self.constants.values():
            if isinstance(value, np.ndarray) and value.dtype == np.float16 and value.size > 64:
                wide = value.astype(np.float32)
                wide.flags.writeable = False
                self._promoted[id(value)] = (value, wide)

    def _value_preserving_steps(self) -> frozenset[int]:
        """Positions of VALUE_PRESERVING ops whose float inputs and outputs are all declared fp16."""
        declared = {name: ttype.dtype for name, ttype in self.function.inputs}
        declared.update({name: ttype.dtype for op in self.function.operations for name, ttype in op.outputs})
        exact = set()
        for op in self.steps:
            if op.type not in VALUE_PRESERVING or any(t.dtype != "fp16" for _, t in op.outputs if t.dtype in FLOATS):
                continue
            dtypes = [declared.get(a.name) if a.name is not None else a.dtype for args in op.inputs.values() for a in args]
            dtypes += list(op.attribute_types.values())
            if all(d not in FLOATS or d == "fp16" for d in dtypes):
                exact.add(op.position)
        return frozenset(exact)

    def _implementation(self, op: Operation) -> Any:
        if op.has_blocks:
            raise UnsupportedModelError(
                f"the Core ML emulator does not run control flow: {op.where(self.function.name)}",
                "Export a model without data-dependent control flow (cond/while)",
            )
        fn = REGISTRY.get(op.type)
        if fn is None:
            raise UnsupportedModelError(
                f"the Core ML emulator does not implement {op.where(self.function.name)}",
                "Validate this model on macOS with the real Core ML runtime, or rewrite the layer with supported ops",
            )
        return fn

    def _execute(self, op: Operation, env: dict[str, Any], exact_storage: bool = False) -> None:
        fn = self._implementation(op)
        ctx = OpContext(op, self.function.name, env, None if exact_storage else self._promoted)
        try:
            result = fn(ctx)
        except EdgekitError:
            raise
        except Exception as exc:  # a numpy error inside an op: name the op, not a traceback
            raise ArtifactError(
                f"the Core ML emulator failed at {op.where(self.function.name)}: {type(exc).__name__}: {exc}",
                "Check the input shapes against `edgekit inspect`; if they match, this is a bug in the emulator",
            ) from exc
        results = result if isinstance(result, tuple) else (result,)
        if len(results) != len(op.outputs):
            raise ArtifactError(
                f"{op.where(self.function.name)} produced {len(results)} outputs, the program declares {len(op.outputs)}",
                "This is a bug in the emulator",
            )
        already_fp16 = op.position in self._fp16_exact if not exact_storage else False
        for (name, ttype), value in zip(op.outputs, results, strict=True):
            with np.errstate(over="ignore"):  # fp16 overflow to inf is what an FP16 program does
                rounded = _round_to(value, ttype.dtype, exact_storage, already_fp16)
            declared = ttype.shape
            # The converter declares every static dim; disagreeing with it means the emulator
            # misread the op (or the file is inconsistent), which must not pass silently.
            if declared is not None and (
                rounded.ndim != len(declared) or any(d is not None and d != s for d, s in zip(declared, rounded.shape))
            ):
                shown = tuple("?" if d is None else d for d in declared)
                raise ArtifactError(
                    f"{op.where(self.function.name)} computed shape {rounded.shape} for '{name}', the program declares {shown}",
                    "Check the input shapes against `edgekit inspect`; otherwise this is a bug in the emulator",
                )
            env[name] = rounded

    def promote(self, values: dict[str, np.ndarray]) -> None:
        """Keep float32 copies of fp16 ``values`` (override weights used for many runs) like the constants'."""
        for value in values.values():
            if isinstance(value, np.ndarray) and value.dtype == np.float16 and id(value) not in self._promoted:
                wide = value.astype(np.float32)
                wide.flags.writeable = False
                self._promoted[id(value)] = (value, wide)

    def run(self, feeds: dict[str, np.ndarray], overrides: dict[str, np.ndarray] | None = None,
            observe: Callable[[Operation, dict[str, Any]], None] | None = None) -> dict[str, np.ndarray]:
        """Run the function on ``feeds`` (by function input name); return every function output.

        ``overrides`` replaces named constants for this run only (the fallback
        search swaps decoded weights in and out this way). ``observe(op, env)``
        is called after each op with every value computed so far (the search
        reads activation statistics through it).
        """
        env: dict[str, Any] = dict(self.constants)
        if overrides:
            env.update(overrides)
        for name, ttype in self.function.inputs:
            if name not in feeds:
                raise DataError(f"no data for Core ML input '{name}'", f"Give arrays named {', '.join(n for n, _ in self.function.inputs)}")
            value = np.asarray(feeds[name])
            if ttype.shape is not None and (
                value.ndim != len(ttype.shape) or any(d is not None and d != s for d, s in zip(ttype.shape, value.shape))
            ):
                declared = tuple("?" if d is None else d for d in ttype.shape)
                raise DataError(f"input '{name}' has shape {value.shape}, the model takes {declared}", "Fix the data's shape")
            env[name] = value.astype(numpy_dtype(ttype.dtype), copy=False)
        for op in self.steps:
            self._execute(op, env)
            if observe is not None:
                observe(op, env)
        declared = {name: ttype.dtype for op in self.function.operations for name, ttype in op.outputs}
        declared.update({name: ttype.dtype for name, ttype in self.function.inputs})
        return {name: env[name].astype(numpy_dtype(declared.get(name, "fp32")), copy=False) for name in self.function.outputs}
