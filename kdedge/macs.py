"""Multiply-accumulates of one forward pass per image, counted with forward hooks.

Counts the layers that dominate compute in this zoo: Conv2d (k_h·k_w·C_in/groups·C_out·H_out·W_out)
and Linear (in·out). BatchNorm, activations, pooling and additions are O(activations) and left out,
as in the usual MAC tables; the count is per image (batch 1).
"""

from __future__ import annotations

import torch
from torch import nn


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    total = 0

    def conv_hook(module: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        k_h, k_w = module.kernel_size
        per_output = k_h * k_w * (module.in_channels // module.groups)
        total += per_output * output.shape[1] * output.shape[2] * output.shape[3]

    def linear_hook(module: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += module.in_features * module.out_features * (output.numel() // output.shape[-1] // output.shape[0])

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
