"""Op implementations, registered by MIL op type name.

An implementation is ``fn(ctx: OpContext) -> array | tuple[array, ...]``.
``OpContext`` hands out inputs already promoted to float32 (``ctx.x``) or as
stored (``ctx.raw``); the interpreter rounds every output to the dtype the
program declares for it, so implementations just compute in float32.
Importing this package imports every op module, which fills ``REGISTRY``.
"""

from edgekit.backends.coreml.emulator.ops import activation, constexpr, elementwise, nn, reduce, tensor  # noqa: F401  (they register)
from edgekit.backends.coreml.emulator.ops.registry import REGISTRY, OpFn, register, supported_ops

__all__ = ["REGISTRY", "OpFn", "register", "supported_ops"]
