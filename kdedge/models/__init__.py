"""Image classifiers by name: every variant is one registered builder function (timm style).

``build_model(name, in_channels=..., num_classes=..., image_size=..., **options)``; the options of a
model are the keyword parameters of its builder (plain annotations, with defaults), so a recipe schema
can be derived from ``inspect.signature(MODELS.get(name))``. Bad option values raise
:class:`~kdedge.models.base.ModelConfigError` (with ``.field``); building under
``with torch.device("meta"):`` is cheap and catches them without allocating weights.
"""

import inspect

from torch import nn

from kdedge.options import option_parameters, unknown_options
from kdedge.registry import Registry

MODELS: Registry = Registry("model")

# the family modules register on import; MODELS must exist before they are imported
from kdedge.models import cnn, mlp, resnet, vgg, wrn  # noqa: E402,F401
from kdedge.models.base import ModelConfigError  # noqa: E402

# Filled in by the pipeline from the data, never by a recipe.
FIXED = frozenset({"in_channels", "num_classes", "image_size"})


def model_options(name: str) -> dict[str, inspect.Parameter]:
    """The recipe-settable options of a model: its builder's keyword parameters minus the fixed three."""
    return option_parameters(MODELS.get(name), FIXED)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    builder = MODELS.get(name)  # unknown names: KdedgeError listing what is available
    unknown = unknown_options(builder, kwargs, FIXED)
    if unknown:
        allowed = model_options(name)
        raise ModelConfigError(
            unknown[0], f"is not an option of model {name!r}; allowed: {', '.join(allowed) or 'none'}"
        )
    return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


__all__ = ["MODELS", "ModelConfigError", "build_model", "model_options"]
