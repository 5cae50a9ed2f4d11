"""Batch-level tensor augmentation used in training: random crop of the padded image and horizontal flip."""

from __future__ import annotations


import torch
import torch.nn.functional as F


def augment(x: torch.Tensor, *, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per sample: random crop of the zero-padded image back to HxW, then (if hflip) a flip with p=0.5.

    All samples are done in one gather (no Python loop). Random draws, in this order, all from
    `generator`: row offsets randint(0, 2p+1, [B]), column offsets randint(0, 2p+1, [B]), then
    rand([B]) < 0.5 for the flip. With padding=0 and hflip=False it returns `x` and draws nothing.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 and not hflip:
        return x
    b, c, h, w = x.shape
    gen_device = generator.device
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gen_device).to(x.device)
    if hflip:
        flip = (torch.rand(b, generator=generator, device=gen_device) < 0.5).to(x.device)
    else:
        flip = torch.zeros(b, dtype=torch.bool, device=x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    col = torch.arange(w, device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # [B, H]
    # a flipped crop reads its columns right to left
    cols = dx[:, None] + torch.where(flip[:, None], (w - 1) - col, col)  # [B, W]
    return padded[
        torch.arange(b, device=x.device).view(b, 1, 1, 1),
        torch.arange(c, device=x.device).view(1, c, 1, 1),
        rows.view(b, 1, h, 1),
        cols.view(b, 1, 1, w),
    ]
