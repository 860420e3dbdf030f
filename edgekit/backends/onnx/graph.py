"""Small ONNX graph utilities the recipes share. Needs ``onnx`` and numpy only.

- ``topological_sort``: onnxruntime's float16 converter writes the input
  Casts it adds after the nodes that read them, which ``onnx.checker``
  rejects ("Nodes in a graph must be topologically sorted").
- ``checker_problem``: what ``onnx.checker`` (full check, with shape
  inference) finds wrong with a file. onnxruntime runs files other ONNX
  consumers (TensorRT, other runtimes) reject, so a clean runtime run does not
  prove a file valid; every candidate must pass this too.
- ``fold_weight_chains``: the dynamo exporter builds GRU/LSTM weights with
  Slice/Concat/Reshape chains from the PyTorch parameters (gate order differs);
  quantizers only see weights that are initializers, so those chains are
  evaluated once into initializers.
- ``ModuleMap``: node name -> PyTorch module path, captured from the
  exporter's per-node metadata before export.py strips it, and looked up
  through renamed and fused nodes by output tensor.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Ops whose weights are (W, R, B) inputs 1-3.
RECURRENT = ("GRU", "LSTM", "RNN")


def checker_problem(path: Path) -> str | None:
    """The first line of ``onnx.checker.check_model(full_check=True)``'s complaint about ``path``; None if valid."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return str(exc).strip().splitlines()[0][:300]
    return None


def topological_sort(graph: onnx.GraphProto) -> onnx.GraphProto:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable otherwise).

    Inputs produced by nothing in the graph (graph inputs, initializers,
    outer-scope names of subgraphs) count as available from the start.
    Raises ValueError on a cycle.
    """
    nodes = list(graph.node)
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                producer[name] = index
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for dep in {producer[n] for n in _inputs_with_subgraphs(node) if n in producer}:
            if dep != index:
                waiting[index] += 1
                users[dep].append(index)
    # A min-heap on the original position would be stabler; a queue seeded in order keeps it close enough.
    ready = deque(i for i in range(len(nodes)) if waiting[i] == 0)
    order: list[int] = []
    while ready:
        index = ready.popleft()
        order.append(index)
        for user in sorted(users[index]):
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(order) != len(nodes):
        raise ValueError("the graph has a cycle; it cannot be sorted")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return graph


def _inputs_with_subgraphs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs plus the outer-scope names its subgraphs (If/Loop/Scan bodies) read."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for sub in graphs:
            local = {t.name for t in sub.initializer} | {i.name for i in sub.input}
            local |= {o for n in sub.node for o in n.output}
            names += [n for inner in sub.node for n in _inputs_with_subgraphs(inner) if n not in local]
    return names


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def drop_unused_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove initializers no node (or graph output) reads any more."""
    used = {n for node in model.graph.node for n in _inputs_with_subgraphs(node)} | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def fold_weight_chains(model: onnx.ModelProto, ops: tuple[str, ...] = RECURRENT) -> tuple[onnx.ModelProto, int]:
    """Evaluate constant subgraphs that feed the weight inputs (1-3) of ``ops`` into initializers.

    Only nodes every input of which is constant (initializers, Constant
    nodes, or outputs of nodes folded before) are evaluated, with
    ``onnx.reference``; the rest of the graph is untouched. Returns the model
    and how many weight inputs became initializers.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: node for node in graph.node for o in node.output}
    wanted = [name for node in graph.node if node.op_type in ops for name in node.input[1:4]
              if name and name not in consts]
    if not wanted:
        return model, 0

    def needed(name: str, seen: set[str]) -> bool:
        """Whether ``name`` is computable from constants alone (collects the nodes to evaluate)."""
        if name in consts or name in seen:
            return True
        node = producer.get(name)
        if node is None or node.op_type in ("Shape", "Size") and not all(i in consts for i in node.input):
            # Shape of an activation is not constant (dynamic batch), so neither is what follows it.
            return False
        if node.op_type not in ("Constant",) and not node.input:
            return False
        if all(needed(i, seen) for i in node.input if i):
            seen.add(name)
            return True
        return False

    chains: set[str] = set()
    foldable = [name for name in wanted if needed(name, chains)]
    folded = 0
    for node in list(graph.node):  # graph order is topological
        if not any(o in chains for o in node.output):
            continue
        sub = helper.make_graph(
            [node], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output],
            [numpy_helper.from_array(consts[i], i) for i in dict.fromkeys(node.input) if i],
        )
        one = helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
        values = ReferenceEvaluator(one).run(None, {})
        for out, value in zip(node.output, values, strict=True):
            consts[out] = np.asarray(value)
    for name in foldable:
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(consts[name]), name))
        folded += 1
    # Drop the nodes whose every output is now an initializer or unused.
    folded_names = set(foldable)
    used = {n for node in graph.node for n in node.input} | {o.name for o in graph.output}
    kept = []
    for node in graph.node:
        outputs = [o for o in node.output if o]
        if outputs and all(o in folded_names or (o in chains and o not in used) for o in outputs):
            continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    # Chains feeding only the folded weights are dead now; drop them (repeat until stable).
    while True:
        used = {n for node in graph.node for n in _inputs_with_subgraphs(node)} | {o.name for o in graph.output}
        alive = [n for n in graph.node if any(o in used for o in n.output if o)]
        if len(alive) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(alive)
    drop_unused_initializers(model)
    return model, folded


# ------------------------------------------------------------ module paths


def modules_file(onnx_path: Path) -> Path:
    """Where the node -> module map of an export lives: beside it, ``<name>.modules.json``."""
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + ".modules.json")


def module_paths(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> PyTorch module path, from the dynamo exporter's ``pkg.torch.onnx.name_scopes``.

    The scopes list the module paths from the root down and end with the fx
    node's own name (``['', 'bert', 'bert.encoder', ..., 'linear']``); the
    module is the last scope before that. Ops of the root module map to nothing.
    """
    found: dict[str, str] = {}
    for node in model.graph.node:
        for prop in node.metadata_props:
            if prop.key != "pkg.torch.onnx.name_scopes":
                continue
            try:
                scopes = json.loads(prop.value.replace("'", '"'))
            except ValueError:
                continue
            # "_empty_nn_module_stack..." marks ops torch could not place in a module.
            if isinstance(scopes, list) and len(scopes) >= 2 and scopes[-2] and not str(scopes[-2]).startswith("_"):
                found[node.name] = str(scopes[-2])
    return found


class ModuleMap:
    """Look up the PyTorch module of a node of any model derived from the FP32 export.

    Quantizers rename what they replace (``X`` -> ``X_Q4``, QLinear forms)
    but keep tensor names, so a node not found by name is found through the
    FP32 node that produced its first output.
    """

    def __init__(self, by_node: dict[str, str], producer_of: dict[str, str] | None = None) -> None:
        self.by_node = by_node
        self.producer_of = producer_of or {}

    @classmethod
    def load(cls, fp32_path: Path) -> ModuleMap:
        """The map saved beside ``fp32_path`` (empty when the export had no metadata)."""
        path = modules_file(fp32_path)
        by_node = json.loads(path.read_text()) if path.exists() else {}
        model = onnx.load(str(fp32_path), load_external_data=False)
        return cls(by_node, {o: n.name for n in model.graph.node for o in n.output})

    def module(self, node_name: str, first_output: str | None = None) -> str | None:
        if node_name in self.by_node:
            return self.by_node[node_name]
        if first_output is not None and first_output in self.producer_of:
            return self.by_node.get(self.producer_of[first_output])
        for suffix in ("_Q4", "_Q8", "_quant", "_MatMul"):
            if node_name.endswith(suffix) and node_name.removesuffix(suffix) in self.by_node:
                return self.by_node[node_name.removesuffix(suffix)]
        return None
