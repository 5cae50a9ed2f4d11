"""MobileOne-S0 (Vasu et al. 2023, "MobileOne: An Improved One millisecond Mobile Backbone"), as Apple's
reference ``ml-mobileone`` and timm's ``mobileone_s0``.

Train-time form: every block is a sum of branches followed by ReLU: ``k`` over-parameterised kxk
conv-BN branches (k = 4 for S0; 1 in the stem), a 1x1 conv-BN "scale" branch (for kxk kernels with
k > 1) and a BN-only identity branch where input and output shapes match. The stem is one 3x3 stride-2
block of 48 channels; four stages of 2 / 8 / 10 / 1 units (widths 48, 128, 256, 1024; first unit
stride 2), each unit a depthwise 3x3 block then a pointwise 1x1 block; global pooling and a Linear
classifier. At 224 px, 3 channels, 1000 classes the train-time net has 5,293,272 parameters (timm's
card: 5.3 M, 1.1 GMACs) and the re-parameterised one 2,078,504 (the paper: 2.1 M, 275 M MACs).

:meth:`MobileOne.reparameterize` folds each block's branches (BN folded into its conv, the 1x1 padded to
kxk, the identity as a one-hot kernel) into one kxk conv with bias; in eval mode the outputs are equal
before and after (BN uses its running statistics, so train-mode outputs differ by design).
:func:`kdedge.models.deploy_form` returns a re-parameterised copy; export uses it.

``stem``: "auto" (default; the stride-1 small-input stem below 96 px), "small" or "imagenet"
(see :mod:`kdedge.models.edge`). ``dropout`` before the classifier (default 0, as published).

Feature paths: ``stem``, ``stages.0`` .. ``stages.3``, ``head.flatten``. Logits: ``head.classifier``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from kdedge.models.base import ConvClassifier, check_common, check_dropout, check_positive, make_head
from kdedge.models.edge import conv_bn, small_stem
from kdedge.models.registry import MODELS

S0_WIDTHS = (48, 128, 256, 1024)
S0_BLOCKS = (2, 8, 10, 1)


def _fold_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(kernel, bias) of conv-then-BN as one conv, with BN's running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class MobileOneBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1, branches: int = 1) -> None:
        super().__init__()
        self.cin, self.cout, self.kernel, self.stride, self.groups = cin, cout, kernel, stride, groups
        self.identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
        self.scale = conv_bn(cin, cout, 1, stride, groups=groups, act=None) if kernel > 1 else None
        self.branches = nn.ModuleList(conv_bn(cin, cout, kernel, stride, groups=groups, act=None)
                                      for _ in range(branches))
        self.act = nn.ReLU(inplace=True)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        out = sum(branch(x) for branch in self.branches)
        if self.scale is not None:
            out = out + self.scale(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.fused is not None:
            return
        ref = self.branches[0][0].weight
        weight = torch.zeros_like(ref)
        bias = torch.zeros(self.cout, dtype=ref.dtype, device=ref.device)
        parts = [_fold_bn(b[0].weight, b[1]) for b in self.branches]
        if self.scale is not None:
            pad = self.kernel // 2
            w, b = _fold_bn(self.scale[0].weight, self.scale[1])
            parts.append((F.pad(w, [pad] * 4), b))
        if self.identity is not None:
            eye = torch.zeros_like(ref)
            per_group = self.cin // self.groups
            for c in range(self.cin):
                eye[c, c % per_group, self.kernel // 2, self.kernel // 2] = 1.0
            parts.append(_fold_bn(eye, self.identity))
        for w, b in parts:
            weight += w
            bias += b
        fused = nn.Conv2d(self.cin, self.cout, self.kernel, self.stride, self.kernel // 2, groups=self.groups,
                          bias=True).to(device=ref.device, dtype=ref.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        del self.branches, self.scale, self.identity
        self.branches, self.scale, self.identity = nn.ModuleList(), None, None
        self.fused = fused


class MobileOne(ConvClassifier):
    def reparameterize(self) -> None:
        """Fold every block's train-time branches into one conv, in place (eval-mode outputs unchanged)."""
        for m in self.modules():
            if isinstance(m, MobileOneBlock):
                m.reparameterize()


@MODELS.register("mobileone_s0")
def mobileone_s0(*, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0,
                 branches: int = 4, stem: str = "auto") -> nn.Module:
    """``branches``: the over-parameterised kxk branches per block (4 in S0; the stem keeps 1)."""
    check_common(in_channels, num_classes, image_size)
    check_dropout("dropout", dropout)
    check_positive("branches", branches)
    stem_layers = MobileOneBlock(in_channels, S0_WIDTHS[0], 3, 1 if small_stem(stem, image_size) else 2)
    stages: list[nn.Module] = []
    prev = S0_WIDTHS[0]
    for width, n in zip(S0_WIDTHS, S0_BLOCKS):
        units: list[nn.Module] = []
        for j in range(n):
            stride = 2 if j == 0 else 1
            units.append(MobileOneBlock(prev, prev, 3, stride, groups=prev, branches=branches))
            units.append(MobileOneBlock(prev, width, 1, branches=branches))
            prev = width
        stages.append(nn.Sequential(*units))
    return MobileOne(stem_layers, stages, make_head(prev, num_classes, dropout))
