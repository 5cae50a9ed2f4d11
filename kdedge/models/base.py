"""Shared pieces of the model families: the config error, value checks, init and the conv layout.

Layout contract (feature KD hooks modules by path, MC dropout toggles ``nn.Dropout`` modules):

* conv nets are a :class:`ConvClassifier`: ``stem`` -> ``stages`` (an ``nn.Sequential``; paths
  ``stages.0``, ``stages.1``, ...) -> ``head``; ``head`` is an ``nn.Sequential`` with named children
  ``[norm, act,] pool, flatten, [fc,] dropout, classifier``.
* the MLP is ``layers`` (one child per hidden layer) -> ``classifier``.
* every model has an ``nn.Dropout`` right before its classifier, **always present, even at p=0**,
  so that MC-dropout code can find it and a missing dropout is never silently a different graph
  (``p == 0`` makes it the identity; MC dropout must check ``p > 0`` itself).
* ``model.feature_paths()`` lists the hookable paths; ``model.classifier_path`` names the last Linear.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Iterable

import torch
from torch import nn

from kdedge.errors import KdedgeError


class ModelConfigError(ValueError, KdedgeError):
    """A model option has a value the architecture cannot be built with.

    Also a KdedgeError, so the CLI prints it as one line if the recipe loader lets it through.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        KdedgeError.__init__(self, f"{field}: {message}")

    def __reduce__(self):  # args differ from __init__'s, so pickling needs the real pair
        return (type(self), (self.field, self.detail))


# --- value checks (each names the field and what is allowed) ----------------------------------


def check_common(in_channels: int, num_classes: int, image_size: int) -> None:
    for field, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        check_positive(field, value)


def check_positive(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelConfigError(field, f"must be a positive integer, got {value!r}")


def check_dropout(field: str, p: float) -> None:
    # p = 1 would zero every activation in training; the range is half-open on purpose
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
        raise ModelConfigError(field, f"must be a probability in [0, 1), got {p!r}")


def check_widths(field: str, widths: Iterable[int]) -> list[int]:
    widths = list(widths)
    if not widths:
        raise ModelConfigError(field, "must list at least one positive integer width, got []")
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ModelConfigError(field, f"must list positive integers, got {widths!r}")
    return widths


def check_choice(field: str, value: int, allowed: Iterable[int]) -> None:
    allowed = sorted(allowed)
    if value not in allowed:
        raise ModelConfigError(field, f"must be one of {allowed}, got {value!r}")


# --- init ---------------------------------------------------------------------------------------


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU), BN as identity, Linear keeps PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# --- conv building blocks -----------------------------------------------------------------------


def conv_bn_relu(cin: int, cout: int, *, batch_norm: bool = True) -> nn.Sequential:
    """3x3 same-padding conv; with BN the conv bias is redundant and dropped."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def make_head(
    features: int,
    num_classes: int,
    dropout: float,
    *,
    pre: Iterable[tuple[str, nn.Module]] = (),
    fc: nn.Module | None = None,
    fc_features: int | None = None,
) -> nn.Sequential:
    """``[pre...], pool, flatten, [fc], dropout, classifier`` with stable child names."""
    parts: list[tuple[str, nn.Module]] = list(pre)
    # adaptive pooling makes the head independent of the input size
    parts += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten(1))]
    if fc is not None:
        parts.append(("fc", fc))
        features = fc_features if fc_features is not None else features
    parts += [("dropout", nn.Dropout(dropout)), ("classifier", nn.Linear(features, num_classes))]
    return nn.Sequential(OrderedDict(parts))


def halve_or_keep(size: int) -> tuple[bool, int]:
    """Whether a 2x2 pool is allowed at this spatial size (never below 1x1), and the size after."""
    return (True, size // 2) if size >= 2 else (False, size)


class ConvClassifier(nn.Module):
    """stem -> stages -> head; the common layout of every conv family."""

    classifier_path = "head.classifier"

    def __init__(self, stem: nn.Module, stages: Iterable[nn.Module], head: nn.Sequential) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.Sequential(*stages)
        self.head = head
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def feature_paths(self) -> list[str]:
        """Module paths whose outputs are useful features: stage maps, then the pooled vector."""
        paths = [] if isinstance(self.stem, nn.Identity) else ["stem"]
        paths += [f"stages.{i}" for i in range(len(self.stages))]
        if hasattr(self.head, "act"):  # pre-activation nets: the activated last map (WRN)
            paths.append("head.act")
        return paths + ["head.flatten"]


def blocks_per_stage(depth: int, fixed_layers: int, examples: str) -> int:
    """Blocks per stage of a 3-stage CIFAR net of `depth` = 6n + fixed_layers (two convs per block)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 6 + fixed_layers or (depth - fixed_layers) % 6:
        raise ModelConfigError("depth", f"must be 6n+{fixed_layers} with n >= 1 ({examples}, ...), got {depth!r}")
    return (depth - fixed_layers) // 6


def deploy_form(model: nn.Module) -> nn.Module:
    """The form to export and benchmark: for a model with ``reparameterize()`` (MobileOne) a re-parameterised
    deep copy (the trained model stays trainable), otherwise the model itself."""
    if not callable(getattr(model, "reparameterize", None)):
        return model
    fused = copy.deepcopy(model)
    fused.reparameterize()
    return fused
