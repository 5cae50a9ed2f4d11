"""VGG with BatchNorm (the dropout teacher of seed 000 and the VGG nets of the KD literature).

Five stages of 3x3 convs with widths ``w, 2w, 4w, 8w, 8w`` (w = ``width``, 64 by default); each
stage ends in a 2x2 max pool unless the map is already 1x1 (so 8x8 up to 32x32+ inputs all work),
then adaptive average pooling, optional hidden Linear layers (``hidden``) and the classifier.
Convs per stage: vgg8 1-1-1-1-1, vgg11 1-1-2-2-2, vgg13 2-2-2-2-2, vgg16 2-2-3-3-3, vgg19 2-2-4-4-4.

Dropout (p = 0.5 by default, the seed-000 setting) sits after every hidden Linear+ReLU and before the
classifier: ``head = pool -> flatten -> fc [Linear -> ReLU (-> Dropout -> Linear -> ReLU)...] ->
dropout -> classifier``.
Seed 000's teacher ("VGG16-like", 14,913,226 parameters on MNIST) is
``vgg16(in_channels=1, num_classes=10, image_size=28, hidden=[256, 256], batch_norm=False)``.

Feature paths: ``stages.0`` .. ``stages.4`` (pooled maps), ``head.flatten`` (pooled vector);
``stem`` is ``nn.Identity``. Logits: ``head.classifier``.
"""

from typing import Callable

from torch import nn

from kdedge.models.registry import MODELS
from kdedge.models.base import (
    ConvClassifier,
    check_choice,
    check_common,
    check_dropout,
    check_positive,
    conv_bn_relu,
    halve_or_keep,
    make_head,
)

CONVS_PER_STAGE: dict[int, tuple[int, ...]] = {
    8: (1, 1, 1, 1, 1),
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}


def build_vgg(
    depth: int,
    width: int,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float,
    hidden: list[int],
    batch_norm: bool,
) -> ConvClassifier:
    check_common(in_channels, num_classes, image_size)
    check_choice("depth", depth, CONVS_PER_STAGE)
    check_positive("width", width)
    check_dropout("dropout", dropout)
    hidden = list(hidden)
    for h in hidden:  # empty is fine here: a single Linear classifier, as in the KD literature
        check_positive("hidden", h)
    widths = [width, 2 * width, 4 * width, 8 * width, 8 * width]

    stages: list[nn.Module] = []
    prev, size = in_channels, image_size
    for n_convs, w in zip(CONVS_PER_STAGE[depth], widths):
        stage = nn.Sequential()
        for _ in range(n_convs):
            stage.extend(conv_bn_relu(prev, w, batch_norm=batch_norm))
            prev = w
        pool, size = halve_or_keep(size)
        if pool:
            stage.append(nn.MaxPool2d(2))
        stages.append(stage)

    fc = None
    if hidden:
        fc = nn.Sequential()
        feats = prev
        for i, h in enumerate(hidden):
            if i > 0:
                fc.append(nn.Dropout(dropout))
            fc.extend([nn.Linear(feats, h), nn.ReLU(inplace=True)])
            feats = h
    head = make_head(prev, num_classes, dropout, fc=fc, fc_features=hidden[-1] if hidden else None)
    return ConvClassifier(nn.Identity(), stages, head)


@MODELS.register("vgg")
def vgg(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    depth: int = 16,
    width: int = 64,
    dropout: float = 0.5,
    hidden: list[int] = [],  # noqa: B006 - read only; the default is part of the schema
    batch_norm: bool = True,
) -> nn.Module:
    return build_vgg(
        depth,
        width,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        dropout=dropout,
        hidden=hidden,
        batch_norm=batch_norm,
    )


def _named(depth: int) -> Callable[..., nn.Module]:
    # one registered function per depth, with the same options as `vgg` minus depth/width
    def variant(
        *,
        in_channels: int,
        num_classes: int,
        image_size: int,
        dropout: float = 0.5,
        hidden: list[int] = [],  # noqa: B006
        batch_norm: bool = True,
    ) -> nn.Module:
        return build_vgg(
            depth,
            64,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            dropout=dropout,
            hidden=hidden,
            batch_norm=batch_norm,
        )

    variant.__name__ = variant.__qualname__ = f"vgg{depth}"
    variant.__doc__ = f"VGG-{depth} with BatchNorm (convs per stage {CONVS_PER_STAGE[depth]})."
    return variant


vgg8 = MODELS.register("vgg8")(_named(8))
vgg11 = MODELS.register("vgg11")(_named(11))
vgg13 = MODELS.register("vgg13")(_named(13))
vgg16 = MODELS.register("vgg16")(_named(16))
vgg19 = MODELS.register("vgg19")(_named(19))
