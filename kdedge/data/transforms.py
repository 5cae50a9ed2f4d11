"""Batch-level tensor augmentation used in training: random crop of the padded image + horizontal flip
(the small built-in sets), or RandomResizedCrop + flip (image folders at real sizes)."""

from __future__ import annotations

import math

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
    flip = _flips(b, hflip, generator, x.device)
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


def random_resized_crop(x: torch.Tensor, *, min_scale: float, hflip: bool, generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), size: int | None = None) -> torch.Tensor:
    """Per sample: a box of area scale U(min_scale, 1) and aspect ratio log-uniform in `ratio` (its sides
    clamped to the image), placed uniformly, resampled to size x size (default: the input's), then (if
    hflip) flipped with p=0.5. One draw per sample, no rejection loop (torchvision retries 10 times,
    then falls back to a centre crop; clamping keeps it batched). Draws, in this order, all from
    `generator`: scale [B], log ratio [B], x position [B], y position [B], then the flip [B]."""
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
    b, _, h, w = x.shape
    dev = generator.device
    scale = torch.empty(b, device=dev).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    box_w = torch.sqrt(scale * h * w * aspect).clamp(max=w)
    box_h = torch.sqrt(scale * h * w / aspect).clamp(max=h)
    left = torch.rand(b, device=dev, generator=generator) * (w - box_w)
    top = torch.rand(b, device=dev, generator=generator) * (h - box_h)
    boxes = torch.stack([left, top, box_w, box_h], dim=1).to(x.device)
    return resized_crop(x, boxes, size or h, _flips(b, hflip, generator, x.device))


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's box (left, top, width, height in pixels; continuous) resampled bilinearly to
    size x size, mirrored where `flip`. Pixel centres map like F.interpolate(align_corners=False) on
    the sliced box, so a whole-image box at the same size is the identity."""
    b, c, h, w = x.shape
    left, top, box_w, box_h = boxes.to(x.dtype).unbind(1)
    # affine_grid works in [-1, 1] over the image's pixel edges (align_corners=False)
    sx = box_w / w
    sy = box_h / h
    if flip is not None:
        sx = torch.where(flip, -sx, sx)
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _flips(b: int, hflip: bool, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    if hflip:
        return (torch.rand(b, generator=generator, device=generator.device) < 0.5).to(device)
    return torch.zeros(b, dtype=torch.bool, device=device)
