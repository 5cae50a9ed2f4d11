"""Multiply-accumulates of one forward pass per image, counted by torch's FlopCounterMode.

It counts the matrix products of the forward pass as the ops that ran (convolutions, linear layers,
matmuls, attention): conv k_h·k_w·C_in/groups·C_out·H_out·W_out, linear in·out. BatchNorm,
activations, pooling, bias and other additions are O(activations) and left out, as in the usual MAC
tables; the count is per image (batch 1). Same numbers as forward hooks on Conv2d/Linear for every
model of the zoo (fp32 and QAT), and it also sees products that are not layers (F.linear, attention).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdedge.inference import model_device


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    was_training = model.training
    model.eval()
    try:
        # no_grad, not inference_mode: the counter's module tracker fails on modelopt's QAT modules there
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=model_device(model)))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2  # one multiply-accumulate = 2 flops
