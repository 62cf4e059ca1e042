"""DrQ random-shift augmentation on uint8 frames (SIM.md: pad 4 on obs and next obs).

DrQ/DrQ-v2 replicate-pad each frame by `pad` pixels and crop back to H x W at a random
integer offset in [0, 2 * pad] per sample (DrQ-v2 does it with `grid_sample`, in float).
We do the same crop by index arithmetic on the uint8 frames: replicate padding followed by
a crop at offset o is `out[i] = img[clamp(i + o - pad, 0, H - 1)]` per axis, so one
batched advanced-indexing call produces all crops, without allocating the padded batch,
without a Python loop over samples and without leaving uint8 (pixels stay uint8 until the
encoder, STYLE.md). (A strided view of all (2p+1)^2 crops of a padded batch was tried: as
fast on one thread but ~25x slower with two threads here, so it was dropped.)
The learner calls this on obs and next obs independently (different offsets), as DrQ.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def _check_images(images: torch.Tensor, pad: int) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"random_shift: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"random_shift: images must be uint8 (B,H,W,C) pixels, got dtype {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"random_shift: images must have shape (B,H,W,C), got {tuple(images.shape)}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"random_shift: pad must be an int >= 0, got {pad!r}")


def sample_offsets(batch: int, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample integer crop offsets `(B, 2)` (row, col), uniform in [0, 2 * pad].

    Drawn on the generator's device (a torch requirement), CPU when no generator is given.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator, device=device)


def shift_by_offsets(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop of the replicate-padded `images` (B,H,W,C) at the given `(B, 2)` offsets.

    Exposed so tests and callers can reproduce a crop exactly.
    """
    b, h, w, _ = images.shape
    dev = images.device
    offsets = offsets.to(dev, torch.long)
    rows = (torch.arange(h, device=dev) + (offsets[:, :1] - pad)).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=dev) + (offsets[:, 1:] - pad)).clamp_(0, w - 1)  # (B, W)
    batch_idx = torch.arange(b, device=dev)[:, None, None]
    return images[batch_idx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift of uint8 frames `(B,H,W,C)` -> new uint8 tensor of the same shape.

    Each sample gets its own offset in [0, 2 * pad] on both axes; `pad=0` returns a copy.
    Passing a seeded `torch.Generator` makes the result deterministic.
    """
    _check_images(images, pad)
    if pad == 0:
        return images.clone()
    return shift_by_offsets(images, sample_offsets(images.shape[0], pad, generator), pad)


class RandomShift(nn.Module):
    """Applies `random_shift` to `obs[key]` of a dict observation; other keys pass through.

    Returns a new dict (the input is never modified). Identity in eval mode or when
    `pad == 0`, so the same module can sit in the learner for training and evaluation.
    """

    def __init__(self, pad: int = 4, key: str = "image") -> None:
        super().__init__()
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"RandomShift: pad must be an int >= 0, got {pad!r}")
        self.pad = pad
        self.key = key

    def forward(
        self, obs: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        if not isinstance(obs, Mapping):
            raise TypeError(f"RandomShift: obs must be a dict of tensors, got {type(obs).__name__}")
        if self.key not in obs:
            raise KeyError(f"RandomShift: obs has no key {self.key!r} (keys: {sorted(obs)})")
        out = dict(obs)
        if self.training and self.pad > 0:
            out[self.key] = random_shift(obs[self.key], self.pad, generator)
        return out

    def extra_repr(self) -> str:
        return f"pad={self.pad}, key={self.key!r}"
