"""Real-size architectures of the benchmark zoo, in plain torch (no torchvision, no transformers).

One factory per model, each returning the architecture in eval mode with
freshly initialised weights; the zoo's weights files (``benchmarks/zoo/.cache``,
made by ``python -m benchmarks.zoo.prepare``) are loaded over them strictly.
edgekit loads this file by path (``architectures.py:mobilenet_v2``), so it is
self-contained: it imports only torch.

- ``mobilenet_v2``: torchvision's MobileNetV2 (width 1.0, 224x224, inverted
  residuals, ReLU6, BatchNorm), with the module names torchvision uses.
- ``resnet18``: torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2]).
- ``vit_tiny``: ViT-Tiny/16 (dim 192, 12 layers, 3 heads, MLP 768, 224x224),
  attention written out (no ``nn.MultiheadAttention``) as timm writes it.
- ``detector``: an SSDLite-style two-output detector on the MobileNetV2
  backbone: class scores and box regressions from the stride-16 and stride-32
  feature maps (one anchor per cell), outputs ``scores`` (N, 245, 11) and
  ``boxes`` (N, 245, 4).
- ``gru`` / ``lstm``: 2-layer recurrent classifiers, hidden 256, over 8 steps
  of 8 features (a digit read row by row).
- ``minilm``: BERT as in Hugging Face ``BertModel`` (6 layers, hidden 384,
  12 heads, exact-erf GELU, additive attention mask of float32's minimum), with
  the sentence-transformers head of all-MiniLM-L6-v2: mean pooling over the
  attention mask, then L2 normalisation. Parameter names match the
  pretrained ``model.safetensors`` (without its unused pooler).

Classifier heads have the task's 10 classes (the zoo fits them as linear
probes); everything before the head is the standard network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 224
DIGIT_CLASSES = 10


# ----------------------------------------------------------------------------- MobileNetV2


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding: nearest multiple of ``divisor``, never more than 10 % below ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNActivation(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6, as torchvision's ``Conv2dNormActivation``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection; residual add when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNActivation(cin, hidden, kernel=1))
        layers += [ConvBNActivation(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# (expansion, channels, repeats, first stride): torchvision's inverted_residual_setting.
MOBILENET_V2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 (width 1.0) with ``num_classes`` outputs."""

    def __init__(self, num_classes: int = DIGIT_CLASSES, width_mult: float = 1.0) -> None:
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNActivation(3, cin, stride=2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(ConvBNActivation(cin, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))
        _torchvision_init(self)
        for m in self.modules():
            if isinstance(m, nn.Linear):  # torchvision's MobileNetV2 head init
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d features the classifier reads."""
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def _torchvision_init(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions, unit BatchNorm: torchvision's init for these nets."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def mobilenet_v2() -> MobileNetV2:
    """MobileNetV2, 224x224 RGB (ImageNet-normalised) -> 10 logits. 2.24M params (3.50M with a 1000-class head)."""
    return MobileNetV2().eval()


# ----------------------------------------------------------------------------- ResNet-18


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18 with ``num_classes`` outputs."""

    def __init__(self, num_classes: int = DIGIT_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        # Explicit stride: torch.export of max_pool with the default stride trips coremltools 9.
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        widths, cin = (64, 128, 256, 512), 64
        for index, width in enumerate(widths, start=1):
            stride = 1 if index == 1 else 2
            setattr(self, f"layer{index}", nn.Sequential(BasicBlock(cin, width, stride), BasicBlock(width, width)))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        _torchvision_init(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


def resnet18() -> ResNet18:
    """ResNet-18, 224x224 RGB -> 10 logits. 11.18M params (11.69M with a 1000-class head)."""
    return ResNet18().eval()


# ----------------------------------------------------------------------------- ViT-Tiny


class Attention(nn.Module):
    """Multi-head self-attention as timm writes it: one qkv Linear, explicit softmax(q k^T / sqrt(d)) v."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.tokens = heads, dim // heads, tokens
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Python ints only (no x.shape arithmetic): coremltools cannot trace integer math on shapes.
        qkv = self.qkv(x).reshape(-1, self.tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(-1, self.tokens, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a class token and learned position embeddings (timm's vit_tiny_patch16_224 layout)."""

    def __init__(self, num_classes: int = DIGIT_CLASSES, image: int = IMAGE_SIZE, patch: int = 16, dim: int = 192,
                 depth: int = 12, heads: int = 3, mlp: int = 768) -> None:
        super().__init__()
        self.grid = image // patch
        tokens = self.grid * self.grid + 1
        self.dim = dim
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp, tokens) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # Patch embedding as timm's "jax" scheme: LeCun-normal over the flattened patch.
        fan_in = 3 * patch * patch
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def vit_tiny() -> VisionTransformer:
    """ViT-Tiny/16, 224x224 RGB -> 10 logits. 5.53M params (5.72M with a 1000-class head)."""
    return VisionTransformer().eval()


# ----------------------------------------------------------------------------- detector


class Detector(nn.Module):
    """SSDLite-style detector: MobileNetV2 backbone, heads on the stride-16 and stride-32 maps.

    Each head is a depthwise 3x3 conv + BN + ReLU6 then a 1x1 conv (SSDLite's
    separable head), one anchor per cell. Outputs: ``scores`` (N, cells, 11:
    background + 10 digits) and ``boxes`` (N, cells, 4: centre offset in the
    cell and log size over the stride), cells = 14*14 + 7*7 = 245.
    """

    CLASSES = DIGIT_CLASSES + 1
    GRIDS = (IMAGE_SIZE // 16, IMAGE_SIZE // 32)

    def __init__(self) -> None:
        super().__init__()
        backbone = MobileNetV2()
        self.stem = backbone.features[:14]  # through the last 96-channel block: stride 16
        self.tail = backbone.features[14:]  # to the 1280-channel 1x1 conv: stride 32
        self.score_dw = nn.ModuleList([ConvBNActivation(c, c, groups=c) for c in (96, 1280)])
        self.box_dw = nn.ModuleList([ConvBNActivation(c, c, groups=c) for c in (96, 1280)])
        self.score_heads = nn.ModuleList([nn.Conv2d(c, self.CLASSES, 1) for c in (96, 1280)])
        self.box_heads = nn.ModuleList([nn.Conv2d(c, 4, 1) for c in (96, 1280)])
        _torchvision_init(self)

    def feature_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        small = self.stem(x)
        return small, self.tail(small)

    def head_inputs(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The per-scale maps the 1x1 score and box convs read (what the zoo fits them on)."""
        maps = self.feature_maps(x)
        return ([dw(m) for dw, m in zip(self.score_dw, maps)], [dw(m) for dw, m in zip(self.box_dw, maps)])

    @staticmethod
    def _cells(x: torch.Tensor, grid: int, width: int) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).reshape(-1, grid * grid, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score_maps, box_maps = self.head_inputs(x)
        scores = [self._cells(h(m), g, self.CLASSES) for h, m, g in zip(self.score_heads, score_maps, self.GRIDS)]
        boxes = [self._cells(h(m), g, 4) for h, m, g in zip(self.box_heads, box_maps, self.GRIDS)]
        return torch.cat(scores, dim=1), torch.cat(boxes, dim=1)


def detector() -> Detector:
    """SSDLite-style detector, 224x224 RGB -> (scores (N, 245, 11), boxes (N, 245, 4)). 2.27M params."""
    return Detector().eval()


# ----------------------------------------------------------------------------- recurrent


class RecurrentClassifier(nn.Module):
    """``cell`` ("gru" | "lstm") over (N, steps, features), the last step's top-layer state -> logits."""

    def __init__(self, cell: str, features: int = 8, hidden: int = 256, layers: int = 2,
                 num_classes: int = DIGIT_CLASSES) -> None:
        super().__init__()
        kind = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = kind(features, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


def gru() -> RecurrentClassifier:
    """2-layer GRU, hidden 256, over (N, 8, 8) -> 10 logits. 600K params."""
    return RecurrentClassifier("gru").eval()


def lstm() -> RecurrentClassifier:
    """2-layer LSTM, hidden 256, over (N, 8, 8) -> 10 logits. 800K params."""
    return RecurrentClassifier("lstm").eval()


# ----------------------------------------------------------------------------- MiniLM (BERT)


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, positions: int, types: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(positions, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # token_type_ids are all 0 for a single sentence, as sentence-transformers feeds them.
        positions = self.position_embeddings.weight[: input_ids.shape[1]]
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        out = scores.softmax(dim=-1) @ v
        return out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.heads * self.head_dim)


class BertSelfOutput(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self = BertSelfAttention(dim, heads)
        self.output = BertSelfOutput(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class BertIntermediate(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's "gelu": exact erf form


class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, inner: int) -> None:
        super().__init__()
        self.attention = BertAttention(dim, heads)
        self.intermediate = BertIntermediate(dim, inner)
        self.output = BertSelfOutput(dim, inner)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, layers: int, dim: int, heads: int, inner: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(dim, heads, inner) for _ in range(layers)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias)
        return x


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2: BertModel + mean pooling + L2 normalisation (sentence-transformers' modules.json).

    Inputs ``input_ids`` and ``attention_mask`` (int64, (N, seq)); output the
    384-d unit-norm sentence embedding. Padding is masked as Hugging Face
    does it: an additive bias of float32's minimum on masked keys.
    """

    def __init__(self, vocab: int = 30522, dim: int = 384, layers: int = 6, heads: int = 12, inner: int = 1536,
                 positions: int = 512, types: int = 2) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, dim, positions, types)
        self.encoder = BertEncoder(layers, dim, heads, inner)
        for m in self.modules():  # BERT's init, for a model used without its pretrained weights
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        hidden = self.encoder(self.embeddings(input_ids), bias)
        weights = mask.unsqueeze(-1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def minilm() -> SentenceEncoder:
    """all-MiniLM-L6-v2 architecture (load the zoo's minilm.safetensors for the pretrained weights). 22.57M params."""
    return SentenceEncoder().eval()
