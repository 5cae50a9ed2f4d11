"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Layer configuration as torchvision's ``mobilenet_v2``: a 3x3 stride-2 stem of 32 channels, seven groups of
inverted residual blocks (expansion t, channels c, repeats n, first stride s) =
(1,16,1,1) (6,24,2,2) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1), a 1x1 conv to 1280,
global pooling, dropout 0.2 and a Linear classifier; ReLU6 everywhere except the linear projections.
``width_mult`` scales every width (rounded to multiples of 8; the last conv never below 1280).
At 224 px, 3 channels, 1000 classes: 3,504,872 parameters and ~0.30 GMACs, as torchvision.

``stem``: "auto" (default; the stride-1 small-input stem below 96 px), "small" or "imagenet"
(see :mod:`kdedge.models.edge`).

Feature paths: ``stem``, ``stages.0`` .. ``stages.6`` (the seven block groups), ``head.act`` (the
activated 1280-channel map), ``head.flatten``. Logits: ``head.classifier``.
"""

from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, make_head
from kdedge.models.edge import InvertedResidual, check_width_mult, conv_bn, head_conv, make_divisible, small_stem
from kdedge.models.registry import MODELS

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


@MODELS.register("mobilenet_v2")
def mobilenet_v2(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    stem: str = "auto",
) -> nn.Module:
    check_common(in_channels, num_classes, image_size)
    width_mult = check_width_mult("width_mult", width_mult)
    check_dropout("dropout", dropout)
    stride = 1 if small_stem(stem, image_size) else 2
    prev = make_divisible(32 * width_mult)
    stem_layers = conv_bn(in_channels, prev, 3, stride, act=nn.ReLU6)
    stages: list[nn.Module] = []
    for t, c, n, s in SETTINGS:
        out = make_divisible(c * width_mult)
        blocks = []
        for i in range(n):
            blocks.append(InvertedResidual(prev, int(round(prev * t)), out, 3, s if i == 0 else 1))
            prev = out
        stages.append(nn.Sequential(*blocks))
    last = make_divisible(1280 * max(1.0, width_mult))
    return ConvClassifier(stem_layers, stages, make_head(last, num_classes, dropout, pre=head_conv(prev, last, nn.ReLU6)))
