"""`ImageStateEncoder`: uint8 camera frame + proprio state + task one-hot -> one feature vector.

The shared encoder of the visual agent (DrQ-v2 / rlpd pattern, STYLE.md): pixels arrive as
uint8 `(B, H, W, C)` and are converted to float and divided by 255 here, inside the module,
so buffers and batches keep frames as uint8 (4x less memory and host-to-device traffic).
Image path: conv trunk -> flatten -> bottleneck `Linear -> LayerNorm -> tanh` (latent 50,
as the PTR/DrQ-v2 critic trunk, SIM.md). The proprio state and the task one-hot are then
appended unchanged (rlpd joins proprio to image features the same way); they carry no
parameters here, the MLP heads downstream mix them. Only /255 is applied (no -0.5 shift
as DrQ-v2): PTR/jaxrl2 feeds `obs / 255`.

Which loss trains this module (critic only, actor sees a detached feature in DrQ-v2) is
the learner's rule; this module is just trainable.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from einops import rearrange
from torch import nn

from encoders.conv import KEYPOINT_CHANNELS, KEYPOINT_STRIDES, PTR_CHANNELS, ConvTrunk, orthogonal_init_
from encoders.normalize import effective_std, standardize
from encoders.spatial import SpatialSoftmax

KINDS: tuple[str, ...] = ("conv", "keypoints", "resnet18")


def _build_trunk(kind: str, in_channels: int, channels: Sequence[int], drop_maxpool: bool) -> nn.Module:
    """Conv trunk by name. torchvision is imported only when a ResNet is asked for."""
    if kind == "conv":
        return ConvTrunk(in_channels, channels)
    if kind == "keypoints":
        return ConvTrunk(in_channels, KEYPOINT_CHANNELS, stride=KEYPOINT_STRIDES)
    if kind == "resnet18":
        from encoders.resnet import ResNet18Trunk

        return ResNet18Trunk(in_channels, drop_maxpool=drop_maxpool)
    raise ValueError(f"ImageStateEncoder: unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")


class ImageStateEncoder(nn.Module):
    """Encodes `{"image": uint8 (B,H,W,C), "state": f32 (B,S), "task": f32 (B,K)}`.

    Output `(B, feature_dim)` with `feature_dim = latent_dim + state_dim + task_dim`, laid
    out as `[tanh(LN(W flat(trunk(image / 255)))), state, task]`.

    kind="conv": the PTR small conv stack (`channels`), flattened.
    kind="keypoints": a shallower conv trunk (`KEYPOINT_CHANNELS`, strides 2-2-1) pooled by a
    spatial softmax into `num_keypoints` (x, y) coordinates (Levine et al. 2016, robomimic).
    kind="resnet18": GroupNorm ResNet-18 + PTR learned spatial embeddings (`spatial_features`
    per channel) instead of a flatten; `drop_maxpool` keeps more resolution on small frames.
    A key whose dim is 0 (e.g. `task_dim=0`) may be absent from the observation.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        state_dim: int,
        task_dim: int,
        kind: str = "conv",
        latent_dim: int = 50,
        channels: Sequence[int] = PTR_CHANNELS,
        drop_maxpool: bool = False,
        spatial_features: int = 8,
        num_keypoints: int = 32,
    ) -> None:
        super().__init__()
        if len(tuple(image_shape)) != 3 or min(image_shape) < 1:
            raise ValueError(f"ImageStateEncoder: image_shape must be (H, W, C) positive ints, got {image_shape!r}")
        if state_dim < 0 or task_dim < 0 or latent_dim < 1:
            raise ValueError(
                f"ImageStateEncoder: need state_dim >= 0, task_dim >= 0, latent_dim >= 1; "
                f"got {state_dim}, {task_dim}, {latent_dim}"
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        self.state_dim, self.task_dim, self.latent_dim = int(state_dim), int(task_dim), int(latent_dim)
        self.kind = kind
        h, w, c = self.image_shape
        self.trunk = _build_trunk(kind, c, channels, drop_maxpool)
        self.pool = self._build_pool(kind, spatial_features, num_keypoints)
        flat_dim = self._flat_dim()
        self.bottleneck = nn.Sequential(nn.Linear(flat_dim, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        orthogonal_init_(self.bottleneck[0])
        self.feature_dim = self.latent_dim + self.state_dim + self.task_dim
        # Fixed standardisation of the proprio state (identity until `set_state_normalization`);
        # buffers, so checkpoints carry them (see encoders/normalize.py for why).
        self.register_buffer("state_mean", torch.zeros(self.state_dim))
        self.register_buffer("state_std", torch.ones(self.state_dim))

    @torch.no_grad()
    def set_state_normalization(self, mean: Any, std: Any) -> None:
        """Standardise obs['state'] by fixed statistics of the offline data (the divisor and
        the clip of `encoders.normalize`)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != (self.state_dim,) or std.shape != (self.state_dim,):
            raise ValueError(f"ImageStateEncoder: state statistics must have {self.state_dim} entries, got "
                             f"{tuple(mean.shape)} and {tuple(std.shape)}")
        self.state_mean.copy_(mean)
        self.state_std.copy_(effective_std(std))

    @classmethod
    def from_obs_spec(cls, obs_spec: Any, **kwargs: Any) -> ImageStateEncoder:
        """Build from a gymnasium `Dict` space or a mapping `{key: shape}` (ARCHITECTURE.md).

        `task` may be missing from the spec (then task_dim = 0).
        """
        spaces = getattr(obs_spec, "spaces", obs_spec)
        if not isinstance(spaces, Mapping):
            raise TypeError(f"ImageStateEncoder.from_obs_spec: expected a Dict space or mapping, got {type(obs_spec).__name__}")
        shapes = {k: tuple(getattr(v, "shape", v)) for k, v in spaces.items()}
        for key in ("image", "state"):
            if key not in shapes:
                raise KeyError(f"ImageStateEncoder.from_obs_spec: obs spec has no key {key!r} (keys: {sorted(shapes)})")
        state_dim = shapes["state"][0] if shapes["state"] else 0
        task_dim = shapes["task"][0] if shapes.get("task") else 0
        return cls(shapes["image"], state_dim, task_dim, **kwargs)

    def _build_pool(self, kind: str, spatial_features: int, num_keypoints: int) -> nn.Module:
        """Flatten for the small conv stack, a spatial softmax for the keypoint trunk, PTR's
        learned spatial embeddings for the ResNet."""
        if kind == "conv":
            return nn.Flatten(1)
        _, ch, fh, fw = self.trunk_output_shape()
        if kind == "keypoints":
            return SpatialSoftmax(ch, fh, fw, num_keypoints)
        from encoders.resnet import SpatialLearnedEmbeddings

        return SpatialLearnedEmbeddings(ch, fh, fw, spatial_features)

    @torch.no_grad()
    def trunk_output_shape(self) -> tuple[int, ...]:
        """Shape `(1, C', H', W')` of the trunk's feature map for one frame (dummy forward)."""
        return tuple(self.trunk(self._dummy_input()).shape)

    def _dummy_input(self) -> torch.Tensor:
        h, w, c = self.image_shape
        return torch.zeros(1, c, h, w, device=next(self.trunk.parameters()).device)

    @torch.no_grad()
    def _flat_dim(self) -> int:
        """Size of the pooled trunk output, from one dummy forward (works for any H, W)."""
        return int(self.pool(self.trunk(self._dummy_input())).shape[1])

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 `(B,H,W,C)` -> latent `(B, latent_dim)` in [-1, 1]."""
        x = rearrange(image, "b h w c -> b c h w").float().div_(255.0)
        latent = self.bottleneck(self.pool(self.trunk(x)))
        # under bf16 autocast (`--run.precision bf16`) the features leave in fp32, like the state
        return latent.float() if latent.dtype in (torch.bfloat16, torch.float16) else latent

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        image = self._checked_image(obs)
        parts = [self.encode_image(image)]
        for key, dim in (("state", self.state_dim), ("task", self.task_dim)):
            if dim > 0:
                x = self._checked_vector(obs, key, dim, image.shape[0], parts[0].dtype)
                parts.append(standardize(x, self.state_mean, self.state_std) if key == "state" else x)
        return torch.cat(parts, dim=1)

    def _checked_image(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(obs, Mapping):
            raise TypeError(f"ImageStateEncoder: obs must be a dict of tensors, got {type(obs).__name__}")
        if "image" not in obs:
            raise KeyError(f"ImageStateEncoder: obs has no key 'image' (keys: {sorted(obs)})")
        image = obs["image"]
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"ImageStateEncoder: obs['image'] must be a torch.Tensor, got {type(image).__name__}")
        if image.dtype != torch.uint8:
            raise TypeError(
                f"ImageStateEncoder: obs['image'] must be uint8 pixels (the encoder divides by 255 itself), "
                f"got dtype {image.dtype}"
            )
        if image.ndim != 4 or tuple(image.shape[1:]) != self.image_shape:
            h, w, c = self.image_shape
            raise ValueError(
                f"ImageStateEncoder: obs['image'] must have shape (B, {h}, {w}, {c}) (B,H,W,C), got {tuple(image.shape)}"
            )
        return image

    @staticmethod
    def _checked_vector(
        obs: Mapping[str, torch.Tensor], key: str, dim: int, batch: int, dtype: torch.dtype
    ) -> torch.Tensor:
        if key not in obs:
            raise KeyError(f"ImageStateEncoder: obs has no key {key!r} (keys: {sorted(obs)})")
        x = obs[key]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"ImageStateEncoder: obs[{key!r}] must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype != dtype:
            raise TypeError(f"ImageStateEncoder: obs[{key!r}] must be {dtype}, got dtype {x.dtype}")
        if tuple(x.shape) != (batch, dim):
            raise ValueError(f"ImageStateEncoder: obs[{key!r}] must have shape ({batch}, {dim}), got {tuple(x.shape)}")
        return x
