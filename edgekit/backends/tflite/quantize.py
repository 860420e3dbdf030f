"""ai-edge-quantizer applied to a float .tflite, as lists of rules.

A recipe is a tuple of ``Rule``s (which ops, matched by op type and a regex on
the op's scope, get which treatment); the rules are returned as plain data for
the artifact's ``config`` so a build can be reproduced, and the fallback
searches (``fallback``) add rules on top of a recipe's. Recipes
(ai-edge-quantizer 0.10):

- ``fp16``                  float16 weights (FLOAT_CASTING), float compute.
- ``static_wi8_ai8``        int8 weights and activations, calibrated. The recipe
                            does not cover EMBEDDING_LOOKUP, so its table gets
                            dynamic-range int8 (int8 table, float rows out); with
                            ``float_io`` the INPUT and OUTPUT ops get NO_QUANTIZE
                            so the interface stays float32.
- ``dynamic_wi8_afp32``     int8 weights; FULLY_CONNECTED / CONV run int8 x int8
                            with activations quantized per run by the kernel
                            (XNNPACK's qd8 path); embeddings int8.
- ``weight_only_wi8_afp32`` int8 weights dequantized to float32 when LiteRT prepares
                            the model: float compute, FP32 speed.
- ``weight_only_wi4_afp32`` int4 weights dequantized to float before each op.
- ``dynamic_wi4_afp32``     int4 weights with dynamic int8 activations.

int4 recipes use OCTAV (clipping chosen to minimise the weight MSE) instead of
plain min/max: on all-MiniLM-L6-v2, per-channel int4 with min/max gave cosine
0.896 vs FP32, OCTAV 0.929-0.937, GPTQ (64 samples, 140 s) 0.915. Every int4
and int8 recipe except static quantizes EMBEDDING_LOOKUP (litert-torch lowers
``nn.Embedding`` to it), which is half of a BERT encoder's weights.
``int4_rules(blockwise=True)`` gives FULLY_CONNECTED 32-element blocks (dynamic
only: the weight-only policy has no blockwise int4); embeddings stay
per-channel there, because a block-wise EMBEDDING_LOOKUP ran 1.8x slower than
FP32 on the encoder (its table is dequantized on every run).

Measured: int4 covers CONV_2D, FULLY_CONNECTED, EMBEDDING_LOOKUP and (weight
only) BATCH_MATMUL, never DEPTHWISE_CONV_2D; litert-torch lowers a
1-input-channel conv to a depthwise conv, so that layer stays float32 (the
census reports it). Recurrent layers (``nn.GRU`` / ``nn.LSTM``) are unrolled by
litert-torch into FULLY_CONNECTED ops that share the layer's weights, so they
are quantized like any linear layer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from edgekit.native_output import quiet_python

SIGNATURE_KEY = "serving_default"
MODES = ("static", "dynamic", "weight_only", "fp16", "none")
# Ops whose second input is a weight ai-edge-quantizer can quantize without touching activations.
WEIGHT_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D_TRANSPOSE", "EMBEDDING_LOOKUP", "BATCH_MATMUL")


@dataclass(frozen=True)
class Rule:
    """One ai-edge-quantizer rule: ops of type ``op`` ("*" for all) whose scope matches ``regex``.

    ``mode``: "static" (int8 weights and activations), "dynamic" (int weights,
    activations quantized at run time), "weight_only", "fp16" or "none"
    (NO_QUANTIZE). Later rules win over earlier ones for the ops they match.
    """

    mode: str
    op: str = "*"
    regex: str = ".*"
    bits: int = 8
    granularity: str = "CHANNELWISE"
    algorithm: str = "min_max"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if len(out["regex"]) > 200:  # exclusion rules list many op scopes; the record says how many
            out["regex"] = f"<{out['regex'].count('|') + 1} op scopes>"
        return out


def _int4(mode: str, blockwise: bool = False) -> tuple[Rule, ...]:
    rules = [Rule(mode, bits=4, algorithm="octav")]
    if blockwise:
        rules.append(Rule(mode, op="FULLY_CONNECTED", bits=4, granularity="BLOCKWISE_32", algorithm="octav"))
    return tuple(rules)


RECIPES: dict[str, tuple[Rule, ...]] = {
    "fp16": (Rule("fp16", bits=16),),
    "static_wi8_ai8": (Rule("static"), Rule("dynamic", op="EMBEDDING_LOOKUP")),
    "dynamic_wi8_afp32": (Rule("dynamic"),),
    "weight_only_wi8_afp32": (Rule("weight_only"),),
    "weight_only_wi4_afp32": _int4("weight_only"),
    "dynamic_wi4_afp32": _int4("dynamic"),
}


def static_rules(embeddings_int8: bool = True) -> tuple[Rule, ...]:
    """static_wi8_ai8, with the embedding table in dynamic-range int8 unless ``embeddings_int8`` is False.

    Microcontrollers keep the float table: a hybrid EMBEDDING_LOOKUP (int8
    table, float rows) ran in TFLite Micro with 2x the error LiteRT has on
    the same model (per-row scales), and its float output then needs a
    QUANTIZE anyway.
    """
    return RECIPES["static_wi8_ai8"] if embeddings_int8 else (Rule("static"),)


def int4_rules(mode: str, blockwise: bool = False) -> tuple[Rule, ...]:
    """The int4 recipe for ``mode`` ("dynamic" or "weight_only"); see the module docstring for ``blockwise``."""
    return _int4(mode, blockwise and mode == "dynamic")


def io_rules(recipe_rules: Sequence[Rule], float_io: bool) -> tuple[Rule, ...]:
    """NO_QUANTIZE on INPUT and OUTPUT when a static recipe must keep a float interface."""
    if float_io and any(r.mode == "static" for r in recipe_rules):
        return (Rule("none", op="INPUT"), Rule("none", op="OUTPUT"))
    return ()


def scope_regex(scopes: Sequence[str]) -> str:
    """A regex matching exactly these op scopes (ai-edge-quantizer matches rules on the op's scope)."""
    return "^(?:" + "|".join(re.escape(s) for s in sorted(set(scopes))) + ")$"


# Keep build output clean: ai-edge-quantizer logs progress and its calibration draws a tqdm bar on
# sys.stderr with ``disable=False`` forced (so TQDM_DISABLE does not help); the bar's text is discarded.
quiet = quiet_python


def _quantizer(float_model: bytes, rules: Sequence[Rule]) -> Any:
    """An ai-edge-quantizer ``Quantizer`` with ``rules`` applied in order."""
    from ai_edge_quantizer import qtyping, quantizer

    names = quantizer.AlgorithmName
    algorithms = {"min_max": names.MIN_MAX_UNIFORM_QUANT, "octav": names.OCTAV}
    qz = quantizer.Quantizer(bytearray(float_model))
    for rule in rules:
        if rule.mode not in MODES:
            raise ValueError(f"unknown rule mode {rule.mode!r}; known: {', '.join(MODES)}")
        op = qtyping.TFLOperationName.ALL_SUPPORTED if rule.op == "*" else qtyping.TFLOperationName(rule.op)
        granularity = qtyping.QuantGranularity(rule.granularity)
        algorithm = algorithms[rule.algorithm]
        if rule.mode == "none":
            qz.update_quantization_recipe(regex=rule.regex, operation_name=op, algorithm_key=names.NO_QUANTIZE)
        elif rule.mode == "fp16":
            qz.add_weight_only_config(regex=rule.regex, operation_name=op, num_bits=16, algorithm_key=names.FLOAT_CASTING)
        elif rule.mode == "static":
            qz.add_static_config(regex=rule.regex, operation_name=op, activation_num_bits=8, weight_num_bits=rule.bits,
                                 weight_granularity=granularity, algorithm_key=algorithm)
        elif rule.mode == "dynamic":
            qz.add_dynamic_config(regex=rule.regex, operation_name=op, num_bits=rule.bits, granularity=granularity,
                                  algorithm_key=algorithm)
        else:
            qz.add_weight_only_config(regex=rule.regex, operation_name=op, num_bits=rule.bits, granularity=granularity,
                                      algorithm_key=algorithm)
    return qz


def needs_calibration(float_model: bytes, rules: Sequence[Rule]) -> bool:
    with quiet():
        return bool(_quantizer(float_model, rules).need_calibration)


def calibrate(float_model: bytes, rules: Sequence[Rule], samples: list[dict[str, np.ndarray]],
              update: str = "min_max") -> dict[str, Any]:
    """Activation ranges (QSVs) of ``float_model`` over ``samples`` for the static ops of ``rules``.

    ai-edge-quantizer's default merges each step's min/max with a moving
    average (factor 0.95). Our calibration steps are single samples (or one
    fixed batch), so the average of per-step extremes sits well inside the
    true range: activations clip. Measured on a small CNN: mean abs logit
    error 5.1% of the mean |logit| with the moving average, 0.4% with the
    running min/max used here ("min_max", the default). The QSVs hold every
    static tensor, so a fallback round that keeps some ops float reuses them.
    """
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    if not samples:
        raise ValueError("static quantization needs calibration samples")
    with quiet():
        qz = _quantizer(float_model, rules)
        if update == "moving_average":
            return qz.calibrate({SIGNATURE_KEY: samples}, num_threads=1)
        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(qz.get_quantization_recipe())
        calib = calibrator.Calibrator(bytes(float_model), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({SIGNATURE_KEY: samples}, manager)
        return calib.get_model_qsvs()


def quantize(float_model: bytes, rules: Sequence[Rule], qsvs: dict[str, Any] | None = None) -> bytes:
    """``float_model`` quantized by ``rules`` (with ``qsvs`` from ``calibrate`` when a rule is static)."""
    with quiet():
        qz = _quantizer(float_model, rules)
        if qz.need_calibration and not qsvs:
            raise ValueError("these rules quantize activations statically: calibrate first")
        result = qz.quantize(qsvs if qz.need_calibration else None, enable_progress_report=False, enable_progress_bar=False)
    return bytes(result.quantized_model)


def quantize_recipe(
    float_model: bytes,
    recipe: str,
    calibration: list[dict[str, np.ndarray]] | None = None,
    float_io: bool = True,
    calibration_update: str = "min_max",
) -> tuple[bytes, dict[str, Any]]:
    """Apply the named recipe; returns the bytes and the rules as data (``config["rules"]``).

    ``calibration`` (feeds keyed by signature input name, in the .tflite's
    input dtypes) is needed by ``static_wi8_ai8`` only.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown ai-edge-quantizer recipe {recipe!r}; known: {', '.join(RECIPES)}")
    rules = RECIPES[recipe] + io_rules(RECIPES[recipe], float_io)
    qsvs = calibrate(float_model, rules, calibration or [], calibration_update) if recipe == "static_wi8_ai8" else None
    config: dict[str, Any] = {"recipe": recipe, "rules": [r.as_dict() for r in rules]}
    if qsvs is not None:
        config["calibration_update"] = calibration_update
    return quantize(float_model, rules, qsvs), config


def with_rules(rules: Sequence[Rule], extra: Sequence[Rule]) -> tuple[Rule, ...]:
    """``rules`` followed by ``extra`` (which win where they match)."""
    return tuple(rules) + tuple(extra)


def raised(rule: Rule, bits: int) -> Rule:
    """``rule`` at another bit width; int8 per channel with min/max.

    Block-wise int8 buys nothing, and OCTAV's clipping search (6 s for the
    37 layers of a BERT encoder, against well under a second for min/max)
    buys nothing at 8 bits either.
    """
    if bits == 8:
        return replace(rule, bits=8, granularity="CHANNELWISE", algorithm="min_max")
    return replace(rule, bits=bits)
