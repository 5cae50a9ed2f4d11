"""Image classifiers by name: every variant is one registered builder function (timm style).

``build_model(name, in_channels=..., num_classes=..., image_size=..., **options)``; the options of a
model are the keyword parameters of its builder (plain annotations, with defaults), so a recipe schema
can be derived from ``inspect.signature(MODELS.get(name))``. Bad option values raise
:class:`~kdedge.models.base.ModelConfigError` (with ``.field``); building under
``with torch.device("meta"):`` is cheap and catches them without allocating weights.
"""

import inspect

from torch import nn

from kdedge.models import (  # noqa: F401  imported to register their builders
    cnn,
    efficientnet_lite,
    mlp,
    mobilenet_v2,
    mobilenet_v3,
    mobileone,
    resnet,
    resnet_imagenet,
    shufflenet,
    vgg,
    wrn,
)
from kdedge.models.base import ModelConfigError, deploy_form
from kdedge.models.registry import FIXED, MODELS
from kdedge.options import OptionError, check_options, option_parameters


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The recipe-settable options of a model: its builder's keyword parameters minus the fixed three."""
    return option_parameters(MODELS.get(name), FIXED)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    builder = MODELS.get(name)  # unknown names: KdedgeError listing what is available
    try:
        check_options(builder, kwargs, FIXED, values=False)  # values: the builder checks them, by field
    except OptionError as exc:
        raise ModelConfigError(
            exc.unknown[0], f"is not an option of model {name!r}; allowed: {', '.join(exc.allowed) or 'none'}"
        ) from None
    return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


__all__ = ["MODELS", "ModelConfigError", "build_model", "deploy_form", "model_options"]
