"""Weight compression of a converted ML Program with ``coremltools.optimize.coreml``.

Methods (all post-training, data-free):

- linear quantization: int8 per output channel (iOS 16+), int4 per block
  along the input dim (iOS 18 only);
- palettization: n-bit k-means look-up tables, per tensor on iOS 17,
  per group of output channels on iOS 18. Per-channel scales
  (``enable_per_channel_scale``) are off by default: with coremltools 9.0
  they stored one table per input position of a conv (measured on the sample
  CNN: 74 KB against 27 KB without, at no accuracy gain);
- magnitude pruning to a sparse representation, alone or joint with the
  above (joint compression needs iOS 18).

coremltools skips tensors smaller than ``weight_threshold`` elements (2048 by
default) without saying so in the result; the build reports what stayed
float from the saved package's census, and the threshold is an option.

Known coremltools 9.0 bug, guarded here: ``per_grouped_channel`` with
``enable_per_channel_scale=True`` saves a weight it *skips* still divided by
its per-channel scales. ``palettize`` compares every plain weight of the
result with the source and, when one changed, redoes the job without
per-channel scales.

Imports coremltools: build-time only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.backends.coreml import census
from edgekit.backends.coreml.options import Options
from edgekit.backends.coreml.export import quiet as _quiet
from edgekit.backends.coreml.emulator.program import load_package


def _config(op_config: Any, per_weight: dict[str, Any] | None = None) -> Any:
    import coremltools.optimize as cto

    return cto.coreml.OptimizationConfig(global_config=op_config, op_name_configs=per_weight or None)


def _misfits(source_package: Path, axis: int, size: int, threshold: int) -> list[str]:
    """Weights above the threshold whose dim ``axis`` does not divide by ``size`` (blocks/groups cannot tile them)."""
    return [w["name"] for w in census.weights(load_package(source_package))
            if w["elements"] > threshold and len(w["shape"]) > axis and w["shape"][axis] % size]


def _int8_config(options: Options) -> Any:
    import coremltools.optimize as cto

    return cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                              weight_threshold=options.weight_threshold)


def linear(model: Any, source_package: Path, dtype: str, options: Options, joint: bool = False,
           keep_float: tuple[str, ...] = (), raise_int8: tuple[str, ...] = (),
           only: tuple[str, ...] | None = None) -> tuple[Any, dict[str, Any]]:
    """int8 per-channel or int4 per-block symmetric weight quantization.

    int4 blocks run along the input dim (axis 1); a weight whose input dim does
    not divide by the block size (a 16-channel conv with 32-blocks) would be
    silently skipped, so it gets int4 per output channel instead.
    ``keep_float`` names weights left alone, ``raise_int8`` weights of an int4
    request stored int8 per channel instead (the fidelity search's choices);
    ``only`` quantizes just the named weights (``dtype`` per channel), nothing else.
    Embedding tables (``gather`` on a constant) are quantized like any weight
    (coremltools 9.0 does; measured on all-MiniLM-L6-v2's 30522x384 table).
    """
    import coremltools.optimize as cto

    settings: dict[str, Any] = {"mode": "linear_symmetric", "dtype": dtype, "weight_threshold": options.weight_threshold}
    per_weight: dict[str, Any] = {}
    if dtype == "int4":
        settings.update(granularity="per_block", block_size=options.block_size)
        fallback = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_channel",
                                                      weight_threshold=options.weight_threshold)
        per_weight = {name: fallback for name in _misfits(source_package, 1, options.block_size, options.weight_threshold)}
    else:
        settings.update(granularity="per_channel")
    per_weight.update({name: _int8_config(options) for name in raise_int8})
    per_weight.update({name: None for name in keep_float})  # None: coremltools leaves the weight alone
    op_config = cto.coreml.OpLinearQuantizerConfig(**settings)
    if only is not None:
        settings = {"mode": "linear_symmetric", "dtype": dtype, "granularity": "per_channel",
                    "weight_threshold": options.weight_threshold}
        op_config = None
        per_weight = {name: cto.coreml.OpLinearQuantizerConfig(**settings) for name in only}
    with _quiet():
        result = cto.coreml.linear_quantize_weights(model, _config(op_config, per_weight), joint_compression=joint)
    config = {"tool": "coremltools.optimize.coreml.linear_quantize_weights", **settings, "joint": joint}
    fallback_names = sorted(n for n, c in per_weight.items() if c is not None and n not in raise_int8)
    if fallback_names:
        config["int4_per_channel"] = fallback_names
    return result, config


def _palettize_once(model: Any, settings: dict[str, Any], per_weight: dict[str, Any], joint: bool) -> Any:
    import coremltools.optimize as cto

    with _quiet():
        return cto.coreml.palettize_weights(model, _config(cto.coreml.OpPalettizerConfig(**settings), per_weight),
                                            joint_compression=joint)


def palettize(
    model: Any, source_package: Path, nbits: int, min_ios: str, options: Options, scratch: Path, joint: bool = False,
    keep_float: tuple[str, ...] = (), raise_int8: tuple[str, ...] = (),
) -> tuple[Any, dict[str, Any], list[str]]:
    """k-means palettization; returns (model, config, notes).

    On iOS 18, tables are per group of ``group_size`` output channels
    (optionally with per-channel scales); weights whose channel count does not
    divide by the group size get one table per tensor instead of being
    skipped. With per-channel scales the saved result is checked for the
    skipped-weight bug (module doc) and redone without them if hit.
    ``raise_int8`` weights are skipped by the palettizer and then stored int8
    per channel by a second, linear pass over just them.
    """
    import coremltools.optimize as cto

    from edgekit.backends.coreml.export import save

    settings: dict[str, Any] = {"mode": "kmeans", "nbits": nbits, "weight_threshold": options.weight_threshold}
    per_weight: dict[str, Any] = {}
    if min_ios == "18":
        settings.update(granularity="per_grouped_channel", group_size=options.group_size,
                        enable_per_channel_scale=options.per_channel_scale)
        per_tensor = cto.coreml.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor",
                                                   weight_threshold=options.weight_threshold)
        per_weight = {n: per_tensor for n in _misfits(source_package, 0, options.group_size, options.weight_threshold)}
    else:
        settings.update(granularity="per_tensor")
    per_weight.update({name: None for name in (*keep_float, *raise_int8)})  # None: coremltools leaves it alone
    notes: list[str] = []
    result = _palettize_once(model, settings, per_weight, joint)
    if settings.get("enable_per_channel_scale"):
        save(result, scratch)
        corrupted = census.changed_float_weights(load_package(source_package), load_package(scratch))
        if corrupted:
            notes.append(
                "coremltools saved skipped weight(s) still divided by per-channel scales "
                f"({', '.join(corrupted)}); palettized again without per-channel scales"
            )
            settings["enable_per_channel_scale"] = False
            result = _palettize_once(model, settings, per_weight, joint)
    if raise_int8:
        result, _ = linear(result, source_package, "int8", options, only=raise_int8)
    config = {"tool": "coremltools.optimize.coreml.palettize_weights", **settings, "joint": joint}
    per_tensor_names = sorted(n for n, c in per_weight.items() if c is not None)
    if per_tensor_names:
        config["per_tensor_tables"] = per_tensor_names
    return result, config, notes


def prune(model: Any, sparsity: float, options: Options) -> tuple[Any, dict[str, Any]]:
    """Magnitude pruning to ``sparsity`` per tensor, stored sparse (bit mask + non-zero values)."""
    import coremltools.optimize as cto

    settings = {"target_sparsity": sparsity, "weight_threshold": options.weight_threshold}
    op_config = cto.coreml.OpMagnitudePrunerConfig(**settings)
    with _quiet():
        result = cto.coreml.prune_weights(model, _config(op_config))
    return result, {"tool": "coremltools.optimize.coreml.prune_weights", **settings}


def restore(model: Any, originals: dict[str, tuple[str, Any]]) -> Any:
    """``model`` with the named compressed weights put back as their original fp16 constants.

    ``originals`` maps a compressed weight's name (the ``constexpr_*`` op's
    output) to (the uncompressed const's name, its value). The fidelity
    search uses it to keep weights of a palettized candidate float without a
    second k-means run (measured: 121 s to palettize a 224x224 MobileNetV2,
    a few seconds to restore). Other weights keep their stored bytes.
    Uses coremltools' graph-pass machinery (``models.utils._apply_graph_pass``,
    as its own ``decompress_weights`` does).
    """
    from coremltools.converters.mil import Builder as mb
    from coremltools.models.utils import _apply_graph_pass
    from coremltools.optimize.coreml._quantization_passes import AbstractQuantizationPass

    class RestoreWeights(AbstractQuantizationPass):  # type: ignore[misc]  # coremltools is untyped
        def is_valid_op(self, op: Any) -> bool:
            return op.op_type is not None and op.op_type.startswith("constexpr_") and len(op.outputs) == 1

        def transform_op(self, op: Any) -> None:
            name, value = originals[op.outputs[0].name]
            restored = mb.const(val=value, before_op=op, name=name)
            op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=restored,
                                                            force_replace=True)
            op.enclosing_block.remove_ops([op])

    with _quiet():
        return _apply_graph_pass(model, RestoreWeights(op_selector=lambda op: op.outputs[0].name in originals))
