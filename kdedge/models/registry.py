"""The model registry the family modules add their builders to (kdedge.models imports them all).

Apart from the package so that the family modules need not import the package that imports them.
"""

from kdedge.registry import Registry

MODELS: Registry = Registry("model")

# Filled in by the pipeline from the data, never by a recipe.
FIXED = frozenset({"in_channels", "num_classes", "image_size"})
