"""Image classifiers by name: every variant is one registered builder function (timm style).

``build_model(name, in_channels=..., num_classes=..., image_size=..., **options)``; the options of a
model are the keyword parameters of its builder (plain annotations, with defaults), so a recipe schema
can be derived from ``inspect.signature(MODELS.get(name))``. Bad option values raise
:class:`~kdedge.models.base.ModelConfigError` (with ``.field``); building under
``with torch.device("meta"):`` is cheap and catches them without allocating weights.
"""

import inspect

from torch import nn

from kdedge.registry import Registry

MODELS: Registry = Registry("model")

# the family modules register on import; MODELS must exist before they are imported
from kdedge.models import cnn, mlp, resnet, vgg, wrn  # noqa: E402,F401
from kdedge.models.base import ModelConfigError  # noqa: E402

FIXED = ("in_channels", "num_classes", "image_size")


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The recipe-settable options of a model: its builder's keyword parameters minus the fixed three."""
    params = inspect.signature(MODELS.get(name)).parameters
    return {k: p for k, p in params.items() if k not in FIXED}


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    builder = MODELS.get(name)  # unknown names: KdedgeError listing what is available
    allowed = model_options(name)
    for key in kwargs:
        if key not in allowed:
            raise ModelConfigError(
                key, f"is not an option of model {name!r}; allowed: {', '.join(allowed) or 'none'}"
            )
    return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


__all__ = ["MODELS", "ModelConfigError", "build_model", "model_options"]
