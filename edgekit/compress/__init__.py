"""Format-neutral compression in torch, before any export: pruning and distillation.

- ``config``: ``PruneConfig`` / ``DistillConfig`` (the ``[prune]`` / ``[distill]`` tables).
- ``train``: the seeded, early-stopped training loop both stages share.
- ``prune``: unstructured global magnitude pruning on a gradual schedule.
- ``structured``: channel / head removal with Torch-Pruning (smaller dense nets).
- ``distill``: teacher → student with soft targets.
- ``measure``: parameters, MACs, ONNX size (raw and gzip), onnxruntime latency.
- ``stage``: checks, training, measurement and the atomic output folder.

Only ``config`` is light; the rest import torch, so import them where used.
"""
