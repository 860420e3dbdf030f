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

# edgekit.config imports compress.config (the [prune]/[distill] tables of BuildConfig), and
# compress.config subclasses edgekit.config.StrictModel. Importing edgekit.config first, here,
# keeps that cycle ordered whichever of the two a program imports first. Both are light.
import edgekit.config  # noqa: E402,F401
