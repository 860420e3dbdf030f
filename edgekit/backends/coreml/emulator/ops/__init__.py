"""Op implementations, registered by MIL op type name.

An implementation is ``fn(ctx: OpContext) -> array | tuple[array, ...]``.
``OpContext`` hands out inputs already promoted to float32 (``ctx.x``) or as
stored (``ctx.raw``); the interpreter rounds every output to the dtype the
program declares for it, so implementations just compute in float32.
Importing this package imports every op module, which fills ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.backends.coreml.emulator.interpreter import OpContext

OpFn = Callable[["OpContext"], Any]
REGISTRY: dict[str, OpFn] = {}


def register(*names: str) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` under each MIL op type in ``names``."""

    def wrap(fn: OpFn) -> OpFn:
        for name in names:
            if name in REGISTRY:
                raise RuntimeError(f"op {name} registered twice")
            REGISTRY[name] = fn
        return fn

    return wrap


def supported_ops() -> list[str]:
    """Every MIL op type the emulator runs, sorted."""
    return sorted(REGISTRY)


from edgekit.backends.coreml.emulator.ops import (  # noqa: E402,F401  (registration side effects)
    activation,
    constexpr,
    elementwise,
    nn,
    reduce,
    tensor,
)
