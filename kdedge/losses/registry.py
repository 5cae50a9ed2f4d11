"""The loss registry the loss modules add their definitions to (kdedge.losses imports them all).

Apart from the package so that a loss module need not import the package that imports it.
"""

from kdedge.registry import Registry

LOSSES: Registry = Registry("loss")
