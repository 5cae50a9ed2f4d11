"""ShuffleNetV2 0.5x and 1.0x (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design").

Layer configuration as torchvision's ``shufflenet_v2_x0_5`` / ``shufflenet_v2_x1_0``: a 3x3 stride-2
conv of 24 channels and a 3x3 stride-2 max pool, three stages of 4 / 8 / 4 units with widths
48/96/192 (0.5x) or 116/232/464 (1.0x), a 1x1 conv to 1024, global pooling and a Linear classifier.
A unit splits its channels in two (stride 1) or feeds both branches the whole input (stride 2: the
left branch is depthwise 3x3 -> 1x1), runs 1x1 -> depthwise 3x3 -> 1x1 on the right branch,
concatenates and shuffles the channels between the two groups. At 224 px, 3 channels, 1000 classes:
1,366,792 / 2,278,604 parameters, ~0.04 / ~0.145 GMACs, as torchvision.

``stem``: "auto" (default: below 96 px the small-input stem, a stride-1 conv and no max pool),
"small" or "imagenet" (see :mod:`kdedge.models.edge`). ``dropout`` before the classifier (default 0,
as published).

Feature paths: ``stem``, ``stages.0`` .. ``stages.2``, ``head.act`` (activated 1024-channel map),
``head.flatten``. Logits: ``head.classifier``.
"""

import torch
from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, make_head
from kdedge.models.edge import conv_bn, head_conv, pooled_stem
from kdedge.models.registry import MODELS

REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        self.left: nn.Module = nn.Identity()
        if stride > 1:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, stride, groups=cin, act=None), conv_bn(cin, half, 1))
        right_in = cin if stride > 1 else half
        self.right = nn.Sequential(
            conv_bn(right_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, work = x.chunk(2, dim=1)
            out = torch.cat((keep, self.right(work)), dim=1)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)
        return channel_shuffle(out, 2)


def build_shufflenet_v2(widths: tuple[int, int, int], *, in_channels: int, num_classes: int, image_size: int,
                        dropout: float, stem: str) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    check_dropout("dropout", dropout)
    stem_layers = pooled_stem(in_channels, 24, 3, stem=stem, image_size=image_size)
    stages: list[nn.Module] = []
    prev = 24
    for width, repeats in zip(widths, REPEATS):
        stages.append(nn.Sequential(*[ShuffleUnit(prev if i == 0 else width, width, 2 if i == 0 else 1)
                                      for i in range(repeats)]))
        prev = width
    return ConvClassifier(stem_layers, stages, make_head(1024, num_classes, dropout, pre=head_conv(prev, 1024, nn.ReLU)))


@MODELS.register("shufflenet_v2_x0_5")
def shufflenet_v2_x0_5(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0,
                       stem: str = "auto") -> nn.Module:
    return build_shufflenet_v2((48, 96, 192), in_channels=in_channels, num_classes=num_classes,
                               image_size=image_size, dropout=dropout, stem=stem)


@MODELS.register("shufflenet_v2_x1_0")
def shufflenet_v2_x1_0(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0,
                       stem: str = "auto") -> nn.Module:
    return build_shufflenet_v2((116, 232, 464), in_channels=in_channels, num_classes=num_classes,
                               image_size=image_size, dropout=dropout, stem=stem)
