"""Rewrites that let TFLite Micro run a torch model, applied to a copy, for microcontroller requests only.

``for_microcontroller(module, inputs, target)`` returns the module to convert
and a list of human-readable rewrite records for the artifact's config and
manifest (empty, with ``module`` itself returned, when nothing needed
rewriting). The caller's model is never modified: the rewrite works on a
``torch.export`` graph of it.

Rewrites (measured with litert-torch 0.10 and tflite-micro 0.dev20261023):

- GELU (``nn.GELU`` and ``F.gelu``, exact or tanh-approximated) becomes the
  tanh approximation written as ``x * sigmoid(2*sqrt(2/pi)*(x + 0.044715*x^3))``,
  which equals ``0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x^3)))`` because
  ``0.5*(1 + tanh(z)) = sigmoid(2z)``. TFLite Micro has no GELU kernel. The
  sigmoid form is deliberate: the TFLite converter pattern-matches the tanh
  form (and the erf form) and fuses it back into a single GELU op, while
  MUL/ADD/LOGISTIC survive conversion and have int8 kernels in TFLite Micro.
  It differs from exact GELU by at most about 5e-4 in float; the artifact's
  validation measures what it costs after quantization.

Other transformer ops were checked and need no rewrite: layer norm lowers to
MEAN/SQUARED_DIFFERENCE/RSQRT/MUL/ADD, attention to BATCH_MATMUL/SOFTMAX/
TRANSPOSE, ``nn.Embedding`` to EMBEDDING_LOOKUP with int32 ids, and an int
mask's ``.to(float)`` to CAST, all in TFLite Micro's op set. An op still
outside it is refused by ``micro.check`` with the op named.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from edgekit.backends.tflite import export
from edgekit.errors import InternalError

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_OPS = (torch.ops.aten.gelu.default,)


def gelu_sigmoid_form(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU's tanh approximation in its sigmoid form (see the module docstring for why this form).

    ``approximate`` is accepted for signature compatibility with ``aten.gelu``
    and ignored: both the exact and the tanh GELU become this function.
    """
    del approximate
    return x * torch.sigmoid((2.0 * _SQRT_2_OVER_PI) * (x + 0.044715 * (x * x * x)))


def _count(graph: torch.fx.Graph, targets: tuple[Any, ...]) -> int:
    return sum(1 for node in graph.nodes if node.op == "call_function" and node.target in targets)


def for_microcontroller(
    module: torch.nn.Module, inputs: dict[str, torch.Tensor], target: str
) -> tuple[torch.nn.Module, list[str]]:
    """``module`` rewritten into ops TFLite Micro has kernels for, and what was rewritten.

    ``module`` takes keyword ``inputs`` (an ``export.NamedIO``). Returns
    ``(module, [])`` unchanged when it contains nothing to rewrite, else a
    ``torch.fx.GraphModule`` with the same keyword interface and one record
    per rewrite, e.g. ``"gelu -> tanh approximation as x*sigmoid(...) (4 ops)"``.
    Raises UnsupportedModelError when torch.export cannot capture the model.
    """
    try:
        with export.quiet(), torch.no_grad():
            program = torch.export.export(module, (), inputs, strict=False)
    except Exception as exc:
        raise export.conversion_error(exc, target, "export") from exc
    gelus = _count(program.graph, _GELU_OPS)
    if not gelus:
        return module, []
    # A decomposition table with only GELU in it leaves every other op as it is.
    with export.quiet():
        program = program.run_decompositions({op: gelu_sigmoid_form for op in _GELU_OPS})
    left = _count(program.graph, _GELU_OPS)
    if left:  # would come back as a GELU op that micro.check refuses; say so here, where the cause is
        raise InternalError(f"{left} GELU op(s) survived the microcontroller rewrite for target '{target}'")
    record = (
        f"gelu -> tanh approximation, written x*sigmoid(2*sqrt(2/pi)*(x + 0.044715*x^3)) so the converter "
        f"does not fuse it back into GELU ({gelus} op{'s' if gelus != 1 else ''})"
    )
    return program.module(), [record]
