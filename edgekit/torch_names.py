"""Which PyTorch module a converted node came from.

Converters name their nodes after the ``torch.export`` graph's nodes ("linear_3",
"node_conv2d_1", "layers.0/linear_3;..."), and ``torch.export`` records for each
node the stack of modules it ran in (``meta["nn_module_stack"]``). These helpers
turn a format's node name, or an op a converter refused, back into the module
path a user knows ("encoder.layer.3.attention.self.query"), so reports and
errors speak the user's language. Imports torch only inside the functions that
export; the lookups work on plain dicts.
"""

from __future__ import annotations

import re
from typing import Any

ROOT = "<model>"  # how the top-level module's own code is named (ops in forward() itself)


def node_modules(program: Any) -> dict[str, str]:
    """fx node name -> dotted module path (``ROOT`` for ops in the top module's forward) of an ExportedProgram."""
    mapping: dict[str, str] = {}
    for node in program.graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        mapping[node.name] = path or ROOT
    return mapping


def _op_matches(target: Any, op: str) -> bool:
    """Whether an fx call target is ``op`` ("new_ones", "aten::new_ones", "aten.new_ones.default")."""
    wanted = re.sub(r"^aten(::|\.)", "", op).split(".")[0]
    name = str(getattr(target, "__name__", target))
    return re.sub(r"^aten(::|\.)", "", name).split(".")[0] == wanted


def op_locations(program: Any, op: str) -> list[str]:
    """Module paths (in graph order, without repeats) whose code calls ``op``."""
    found: list[str] = []
    for node in program.graph.nodes:
        if node.op == "call_function" and _op_matches(node.target, op):
            stack = node.meta.get("nn_module_stack") or {}
            entry = list(stack.values())[-1] if stack else ("", "")
            where = f"{entry[0] or ROOT} ({str(entry[1]).rsplit('.', 1)[-1]})" if entry[1] else entry[0] or ROOT
            if where not in found:
                found.append(where)
    return found


def locate_op(model: Any, example_inputs: tuple[Any, ...], op: str) -> list[str]:
    """Where in ``model`` the op ``op`` is called, by exporting it once; [] when the export itself fails."""
    import torch

    try:
        program = torch.export.export(model, tuple(example_inputs), strict=False)
    except Exception:  # the export is only a means to name the module; the caller's error stands without it
        return []
    return op_locations(program, op)


def module_for(name: str, modules: dict[str, str]) -> str | None:
    """The module path of a converted node named ``name``, or None when no fx node name can be found in it.

    Tries the name itself, then without a "node_" prefix (ONNX dynamo), then
    each ``/``, ``;`` or ``:``-separated part (TFLite tensor names).
    """
    candidates = [name, name.removeprefix("node_")]
    candidates += [part for part in re.split(r"[/;:]", name) if part]
    for candidate in candidates:
        if candidate in modules:
            return modules[candidate]
    return None
