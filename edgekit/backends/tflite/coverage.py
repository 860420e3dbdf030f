"""Coverage of a .tflite candidate: weights by stored precision, and which compute ops run fast.

``measure`` turns the weight census (``inspect.weight_census``) and LiteRT's
delegation (``TfliteSession.delegation``: which ops the XNNPACK delegate took,
read in the runtime child process) into ``edgekit.coverage.Coverage``:

- weights: every learned-parameter element by its stored type (biases in
  int32 and normalisation scales count too, so a fully quantized model
  reaches ~99 %, not 100 %);
- compute ops: the ops that carry the model's arithmetic (``COMPUTE_OPS``);
  ``fast_ops`` counts those XNNPACK runs. Extra keys say how many of them run
  integer kernels: int8/int16 activations (static), or int8/int4 weights fed
  straight to the op (dynamic range: XNNPACK quantizes the activations per
  run and multiplies in integers). Weight-only recipes dequantize their
  weights first, so their compute is float by design;
- ``float_ops``: weight ops whose weights stayed float, each with why, and
  large constants of other ops (parameters torch folded into an ADD or MUL,
  which no recipe quantizes), with their PyTorch module where the tensor
  names tell it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from edgekit.backends.tflite.inspect import ParsedModel, _elements, _is_constant, _text, _TYPE_NAMES, FLOAT_KEYS, WEIGHT_OPS
from edgekit.backends.tflite.names import ModuleIndex
from edgekit.coverage import Coverage, FloatOp

COMPUTE_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "EMBEDDING_LOOKUP", "TRANSPOSE_CONV",
    "CONV_3D", "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
    "BIDIRECTIONAL_SEQUENCE_RNN", "LSTM", "RNN", "SVDF",
})
INTEGER_TYPES = frozenset({"int8", "uint8", "int16"})
INTEGER_WEIGHTS = frozenset({"int8", "int4", "uint8"})
# Constants of non-weight ops at least this big are listed as float parameters (position tables, scales).
LISTED_CONSTANT = 4096
FAST_PATH = ("XNNPACK, LiteRT's default CPU delegate (the ops it takes, read from the interpreter's node list "
             "in the runtime process)")


def _why(op: str, precision: str, recipe: str) -> str:
    if op == "DEPTHWISE_CONV_2D" and precision == "int4":
        return "ai-edge-quantizer's int4 recipes do not quantize DEPTHWISE_CONV_2D"
    if op == "BATCH_MATMUL":
        return f"{recipe} leaves BATCH_MATMUL with a constant operand float (not in its op list)"
    return f"{recipe} left this {op} weight float"


def measure(
    parsed: ParsedModel,
    census: dict[str, Any],
    delegation: list[dict[str, Any]] | None,
    precision: str,
    recipe: str,
    modules: ModuleIndex | None = None,
    kept_float: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``Coverage(...).as_dict()`` plus ``integer_ops`` and a per-op-type ``compute`` table.

    ``kept_float`` maps the output tensor names of ops a fallback search kept
    float to the reason; ``delegation`` None means it could not be read
    (then no fast share is claimed).
    """
    graph = parsed.model.subgraphs[0]
    tensors = graph.tensors or []
    float_ops: list[FloatOp] = []
    for layer in census["float_layers"]:
        op_index = layer["index"]
        out = _text(tensors[graph.operators[op_index].outputs[0]].name)
        reason = (kept_float or {}).get(out) or _why(layer["op"], precision, recipe)
        float_ops.append(FloatOp(layer["weight"][-160:], layer["op"], layer["elements"], reason,
                                 modules.module_for_op(layer["op"], [out, layer["weight"]]) if modules else None))
    # Big float constants feeding other ops: parameters folded by torch.export (positions, LayerNorm scales).
    folded: Counter[tuple[str, str]] = Counter()
    for op, name in zip(graph.operators or [], parsed.op_names):
        if name in WEIGHT_OPS or name == "DEQUANTIZE" or op.inputs is None:
            continue
        for t in op.inputs:
            if t < 0 or not _is_constant(parsed.model, tensors[t]) or _TYPE_NAMES.get(tensors[t].type) not in FLOAT_KEYS:
                continue
            if _elements(tensors[t]) >= LISTED_CONSTANT:
                out = _text(tensors[op.outputs[0]].name) if op.outputs is not None and len(op.outputs) else ""
                folded[(name, out)] += _elements(tensors[t])
    for (name, out), elements in folded.items():
        float_ops.append(FloatOp(out.split(";;")[-1][-160:], name, elements,
                                 f"a constant operand of {name} (a parameter torch folded into arithmetic; no recipe quantizes it)",
                                 modules.module_for(name, out) if modules else None))
    compute = [d for d in delegation or [] if d["op"] in COMPUTE_OPS]
    table: dict[str, dict[str, int]] = {}
    integer = 0
    for d in compute:
        row = table.setdefault(d["op"], {"total": 0, "xnnpack": 0, "integer": 0})
        row["total"] += 1
        row["xnnpack"] += int(d["delegated"])
        types = d["input_types"]
        # Integer activations (static), or an integer weight fed straight to the op (dynamic range; for
        # EMBEDDING_LOOKUP: rows read from an integer table). Weight-only goes through DEQUANTIZE: float.
        if (types and types[0] in INTEGER_TYPES) or (len(types) > 1 and types[1] in INTEGER_WEIGHTS):
            row["integer"] += 1
            integer += 1
    coverage = Coverage(
        precision=precision,
        by_precision=dict(census["by_precision"]),
        compute_ops=len(compute) if delegation is not None else None,
        fast_ops=sum(int(d["delegated"]) for d in compute) if delegation is not None else None,
        fast_path=FAST_PATH,
        float_ops=tuple(float_ops),
    )
    out = coverage.as_dict()
    if delegation is not None:
        out["integer_ops"] = integer
        out["compute"] = dict(sorted(table.items()))
        out["not_delegated"] = sorted({d["op"] for d in compute if not d["delegated"]})
    return out
