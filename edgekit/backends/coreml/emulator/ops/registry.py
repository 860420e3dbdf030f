"""The op table: MIL op type name -> implementation.

An implementation is ``fn(ctx: OpContext) -> array | tuple[array, ...]``. Op
modules register into ``REGISTRY`` with ``@register``; importing the ``ops``
package imports every op module and so fills it.
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
