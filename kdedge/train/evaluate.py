"""Inference over a whole split: logits in eval mode, batched, no autograd."""

from __future__ import annotations

import torch
from torch import nn

from kdedge.data import ImageData
from kdedge.train.batches import InputStats, prepare_batch


def uses_conv(model: nn.Module) -> bool:
    """Conv nets get channels_last inputs (faster on CPU); others keep the default layout."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


@torch.inference_mode()
def predict_logits(model: nn.Module, data: ImageData, stats: InputStats, *, batch_size: int,
                   device: torch.device) -> torch.Tensor:
    """Eval-mode logits of a whole split, in order. Every stage evaluates through here."""
    channels_last = uses_conv(model)
    was_training = model.training
    model.eval()
    mean, std = stats.tensors(device)
    outputs = []
    try:
        for start in range(0, len(data), batch_size):
            x = prepare_batch(data.images[start:start + batch_size], mean, std, channels_last=channels_last)
            outputs.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)
