"""Inference over many inputs in batches: the one loop behind torch evaluation, ONNX Runtime sessions,
TensorRT engines and the bench's predictors. Light on purpose (numpy and torch only): `kdedge bench`
evaluates through here without loading the training stack."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np
import torch
from torch import nn

from kdedge.inputs import InputStats, normalise_batch

if TYPE_CHECKING:
    from kdedge.data import ImageData

Batch = TypeVar("Batch", np.ndarray, torch.Tensor)


def batched(predict: Callable[[Batch], Batch], inputs: Batch, batch_size: int) -> Batch:
    """`predict` on consecutive slices of `inputs` (a numpy array or a torch tensor), outputs joined in
    order; with no inputs, an empty result of the inputs' kind."""
    outputs = [predict(inputs[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
    if isinstance(inputs, torch.Tensor):
        return torch.cat(outputs) if outputs else torch.empty(0)
    return np.concatenate(outputs) if outputs else np.empty((0, 0), dtype=np.float32)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are; CPU for one without torch weights (a teacher run in ONNX Runtime,
    which takes its inputs from any device)."""
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


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

    def logits(images: torch.Tensor) -> torch.Tensor:
        return model(normalise_batch(images, mean, std, channels_last=channels_last)).float().cpu()

    try:
        return batched(logits, data.images, batch_size)
    finally:
        model.train(was_training)
