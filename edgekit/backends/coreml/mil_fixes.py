"""MIL graph passes that repair what coremltools 9.0 converts wrongly, run inside ``ct.convert``.

``select_shape_from_cond``: coremltools' ``select`` type inference broadcasts
only ``a`` and ``b`` and ignores ``cond`` (MIL's spec broadcasts all three).
``torch.where(mask, 0.0, -inf)`` with scalar branches, as Hugging Face's
attention-mask builder writes it, is then declared a scalar although it
computes a (batch, 1, seq, seq) tensor: measured on all-MiniLM-L6-v2, whose
mask ``select`` was declared ``()``. A program that declares a wrong shape is
not one to ship (the emulator refuses it; Core ML may too). The pass adds
``fill_like(cond, 0)`` to ``a`` so that the declared shape is the real one;
values do not change (x + 0 = x, -inf + 0 = -inf).

``fp16_range_constants`` (FP16 programs only): float32 constants beyond
FP16's range become +-65504 instead of +-inf when coremltools casts them.
Hugging Face builds its attention mask as ``(1 - mask) * finfo(float32).min``;
cast to FP16 that constant is -inf and ``0 * -inf`` is NaN, so every output of
all-MiniLM-L6-v2's FP16 program was NaN (measured in the emulator, which
computes IEEE FP16 as the device does). -65504 masks as well (softmax gives it
weight 0) and ``0 * -65504`` is 0.

``register()`` registers the passes once; ``pipeline()`` is coremltools'
default pipeline with them in front. Imports coremltools: build-time only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SELECT_PASS = "edgekit::select_shape_from_cond"
FP16_RANGE_PASS = "edgekit::fp16_range_constants"
FP16_MAX = 65504.0
_registered = False
repaired: list[str] = []  # names of the selects the shape pass rewrote since the caller last cleared it
clamped: list[str] = []  # names of the constants the FP16 range pass clamped since the caller last cleared it


def register() -> None:
    """Register edgekit's passes with coremltools (idempotent)."""
    global _registered
    if _registered:
        return
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.graph_pass import AbstractGraphPass
    from coremltools.converters.mil.mil.passes.helper import block_context_manager
    from coremltools.converters.mil.mil.passes.pass_registry import register_pass

    class OpRewritePass(AbstractGraphPass):  # type: ignore[misc]  # coremltools is untyped
        """Visits every op of every function, nested blocks first; ``rewrite`` changes one op or leaves it."""

        def apply(self, prog: Any) -> None:
            for function in prog.functions.values():
                self._block(function)

        @block_context_manager
        def _block(self, block: Any) -> None:
            for op in list(block.operations):
                for inner in op.blocks:
                    self._block(inner)
                self.rewrite(op, block)

        def rewrite(self, op: Any, block: Any) -> None:
            raise NotImplementedError

    @register_pass(namespace="edgekit", name="select_shape_from_cond")
    class SelectShapeFromCond(OpRewritePass):
        def rewrite(self, op: Any, block: Any) -> None:
            if op.op_type != "select" or op.outputs[0].rank >= op.cond.rank:
                return
            if not types.is_float(op.a.dtype) or op.a.dtype != op.b.dtype:
                return  # only the float masks seen so far; others are left as converted
            zeros = mb.fill_like(ref_tensor=op.cond, value=types.nptype_from_builtin(op.a.dtype)(0), before_op=op)
            widened = mb.add(x=op.a, y=zeros, before_op=op)
            fixed = mb.select(cond=op.cond, a=widened, b=op.b, before_op=op, name=op.name + "_full")
            # The new type is wider than the declared one, so types are not checked; the consumers'
            # types are inferred again from it below.
            op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=fixed,
                                                            no_check_var_types=True)
            repaired.append(op.name)
            block.remove_ops([op])
            _infer_consumers(block, fixed)

    @register_pass(namespace="edgekit", name="fp16_range_constants")
    class Fp16RangeConstants(OpRewritePass):
        def rewrite(self, op: Any, block: Any) -> None:
            if op.op_type != "const" or op.outputs[0].dtype != types.fp32:
                return
            value = np.asarray(op.outputs[0].val)
            if not (np.abs(value) > FP16_MAX).any():
                return
            finite = np.clip(value, -FP16_MAX, FP16_MAX).astype(np.float32)
            new = mb.const(val=finite if finite.ndim else np.float32(finite), before_op=op, name=op.name + "_fp16")
            op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new)
            clamped.append(op.name)
            block.remove_ops([op])

    _registered = True


def _infer_consumers(block: Any, changed: Any) -> None:
    """Run type inference again on every op of ``block`` that (transitively) reads ``changed``."""
    affected = {id(changed)}
    for op in block.operations:
        if any(id(v) in affected for v in op.inputs.values() if not isinstance(v, (list, tuple))) or any(
                id(v) in affected for vs in op.inputs.values() if isinstance(vs, (list, tuple)) for v in vs):
            op.type_value_inference(overwrite_output=True)
            affected.update(id(v) for v in op.outputs)


def pipeline(fp16: bool = True) -> Any:
    """coremltools' default pass pipeline with edgekit's repairs first (the FP16 range one for FP16 programs)."""
    import coremltools as ct

    register()
    passes = ct.PassPipeline.DEFAULT
    passes.insert_pass(0, SELECT_PASS)
    if fp16:
        passes.insert_pass(1, FP16_RANGE_PASS)
    return passes
