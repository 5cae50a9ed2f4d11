"""EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet"; the Lite variant of the TensorFlow TPU repository,
as timm's ``efficientnet_lite0``).

Lite differs from EfficientNet-B0 for edge accelerators and INT8: no squeeze-excite, ReLU6 instead of
swish, stem (32) and head (1280) fixed. Layout: 3x3 stride-2 stem of 32 channels, seven groups
(kernel, expansion, channels, repeats, first stride) = (3,1,16,1,1) (3,6,24,2,2) (5,6,40,2,2)
(3,6,80,3,2) (5,6,112,3,1) (5,6,192,4,2) (3,6,320,1,1) of inverted residual blocks (the first,
expansion 1, is depthwise-separable: depthwise -> 1x1 linear), a 1x1 conv to 1280, global pooling,
dropout 0.2 and a Linear classifier. At 224 px, 3 channels, 1000 classes: 4,652,008 parameters,
~0.40 GMACs (timm; the TF repository lists 4.7M / 407M MAdds).

``stem``: "auto" (default; the stride-1 small-input stem below 96 px), "small" or "imagenet"
(see :mod:`kdedge.models.edge`).

Feature paths: ``stem``, ``stages.0`` .. ``stages.6``, ``head.act`` (activated 1280-channel map),
``head.flatten``. Logits: ``head.classifier``.
"""

from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, make_head
from kdedge.models.edge import InvertedResidual, conv_bn, head_conv, small_stem
from kdedge.models.registry import MODELS

# (kernel, expansion, channels, repeats, first stride)
LITE0 = ((3, 1, 16, 1, 1), (3, 6, 24, 2, 2), (5, 6, 40, 2, 2), (3, 6, 80, 3, 2), (5, 6, 112, 3, 1),
         (5, 6, 192, 4, 2), (3, 6, 320, 1, 1))


@MODELS.register("efficientnet_lite0")
def efficientnet_lite0(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.2,
                       stem: str = "auto") -> nn.Module:
    check_common(in_channels, num_classes, image_size)
    check_dropout("dropout", dropout)
    stem_layers = conv_bn(in_channels, 32, 3, 1 if small_stem(stem, image_size) else 2, act=nn.ReLU6)
    stages: list[nn.Module] = []
    prev = 32
    for kernel, expansion, channels, repeats, stride in LITE0:
        blocks = []
        for i in range(repeats):
            blocks.append(InvertedResidual(prev, prev * expansion, channels, kernel, stride if i == 0 else 1))
            prev = channels
        stages.append(nn.Sequential(*blocks))
    return ConvClassifier(stem_layers, stages, make_head(1280, num_classes, dropout, pre=head_conv(prev, 1280, nn.ReLU6)))
