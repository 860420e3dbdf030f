"""Facts about a ``.pte`` read from its bytes (nothing runs): I/O, operators, delegates, weights.

The program is parsed with ExecuTorch's own deserializer. XNNPACK packs the
weights it runs inside its delegate blob, which this reader cannot open, so
the weight census is the one edgekit's build measured and stored in the
program (a constant method); ``details.weights_source`` says so, and a
``.pte`` made elsewhere reports only the constants outside delegates.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.artifact import size_bytes
from edgekit.backends.executorch.methods import FIXED_BATCH, INPUT_NAMES, OUTPUT_NAMES, SCALAR_TYPES, WEIGHTS
from edgekit.errors import ArtifactError, BackendUnavailableError


def _program(path: Path) -> Any:
    try:
        from executorch.exir._serialize._program import deserialize_pte_binary
    except ModuleNotFoundError:
        raise BackendUnavailableError("inspecting .pte files needs the 'executorch' package",
                                      'Install it with: pip install "edgekit[executorch]"') from None
    try:
        return deserialize_pte_binary(path.read_bytes()).program
    except Exception as exc:  # the flatbuffer reader raises untyped errors for other bytes
        raise ArtifactError(f"{path.name} is not an ExecuTorch program ({type(exc).__name__})", "Check the file") from None


def _constant(plan: Any) -> Any:
    values = [plan.values[i].val for i in plan.outputs]
    found = [getattr(v, "string_val", getattr(v, "int_val", None)) for v in values]
    return found if len(found) != 1 else found[0]


def _tensor(name: str, value: Any) -> dict[str, Any]:
    shape = [int(d) for d in value.sizes]
    dynamic = int(getattr(value.shape_dynamism, "value", value.shape_dynamism)) != 0
    return {"name": name, "shape": [None, *shape[1:]] if dynamic and shape else shape,
            "dtype": SCALAR_TYPES.get(int(getattr(value.scalar_type, "value", value.scalar_type)), str(value.scalar_type))}


def inspect(path: Path) -> dict[str, Any]:
    """I/O, op histogram (kernels and delegate calls), delegates and the weight census of ``path``."""
    program = _program(path)
    plans = {plan.name: plan for plan in program.execution_plan}
    if "forward" not in plans:
        raise ArtifactError(f"{path.name} has no 'forward' method (it has {sorted(plans)})", "Export the model's forward")
    forward = plans["forward"]
    constants = {name: _constant(plan) for name, plan in plans.items() if name != "forward"}
    input_names = constants.get(INPUT_NAMES) or [f"input_{i}" for i in range(len(forward.inputs))]
    output_names = constants.get(OUTPUT_NAMES) or [f"output_{i}" for i in range(len(forward.outputs))]
    input_names = [input_names] if isinstance(input_names, str) else input_names
    output_names = [output_names] if isinstance(output_names, str) else output_names
    ops: Counter[str] = Counter()
    for chain in forward.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            kind = type(args).__name__
            if kind == "KernelCall":
                ops[forward.operators[args.op_index].name] += 1
            elif kind == "DelegateCall":
                ops[f"delegate:{forward.delegates[args.delegate_index].id}"] += 1
    recorded = constants.get(WEIGHTS)
    census = json.loads(recorded) if isinstance(recorded, str) else {}
    quantized = {p: n for p, n in census.items() if p in ("int8", "int4")}
    return {
        "format": "executorch",
        "path": str(path),
        "size_bytes": size_bytes(path),
        "inputs": [_tensor(n, forward.values[i].val) for n, i in zip(input_names, forward.inputs)],
        "outputs": [_tensor(n, forward.values[i].val) for n, i in zip(output_names, forward.outputs)],
        "ops": dict(ops.most_common()),
        "parameters": sum(census.values()),
        "weights": {"by_precision": dict(sorted(census.items())), "by_op": {"(whole program)": dict(sorted(census.items()))} if census else {},
                    "parameters": sum(census.values())},
        "quantized": bool(quantized),
        "details": {
            "pte_version": int(program.version),
            "delegates": sorted({d.id for d in forward.delegates}),
            "fixed_batch": constants.get(FIXED_BATCH) or None,
            "weights_source": ("recorded by edgekit's build inside the program (XNNPACK stores weights in its "
                               "delegate blob)") if census else "not recorded: a .pte not made by edgekit",
        },
    }
