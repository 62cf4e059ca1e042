"""Unit tests for encoders/: shapes, /255 inside the module, bottleneck range, feature
layout, gradient flow, clear input errors, and the DrQ random shift checked against an
independent reference (float replicate padding via torch.nn.functional.pad + brute force
over all offsets)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from encoders import KINDS, ConvTrunk, ImageStateEncoder, RandomShift, random_shift
from encoders.augment import shift_by_offsets
from encoders.resnet import ResNet18Trunk, SpatialLearnedEmbeddings
from encoders.spatial import SpatialSoftmax

STATE_DIM, TASK_DIM, LATENT = 7, 4, 50


def make_obs(batch: int, size: int | tuple[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=g),
        "state": torch.randn(batch, STATE_DIM, generator=g),
        "task": F.one_hot(torch.randint(0, TASK_DIM, (batch,), generator=g), TASK_DIM).float(),
    }


_CACHE: dict[tuple, ImageStateEncoder] = {}


def encoder(kind: str, size: int, **kw) -> ImageStateEncoder:
    """Encoders are cached per config: building a ResNet-18 costs ~0.3 s."""
    key = (kind, size, tuple(sorted(kw.items())))
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = ImageStateEncoder((size, size, 3), STATE_DIM, TASK_DIM, kind=kind, latent_dim=LATENT, **kw)
    return _CACHE[key]


def first_conv(enc: ImageStateEncoder) -> nn.Conv2d:
    return next(m for m in enc.trunk.modules() if isinstance(m, nn.Conv2d))


# ---------------------------------------------------------------- ImageStateEncoder


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [48, 64])
def test_output_shape_and_dtype(kind: str, size: int) -> None:
    enc = encoder(kind, size)
    feat = enc(make_obs(3, size))
    assert enc.feature_dim == LATENT + STATE_DIM + TASK_DIM
    assert feat.shape == (3, enc.feature_dim)
    assert feat.dtype == torch.float32
    assert torch.isfinite(feat).all()


@pytest.mark.parametrize("hw", [(32, 32), (40, 56), (96, 80)])
def test_conv_any_image_size_from_32(hw: tuple[int, int]) -> None:
    enc = ImageStateEncoder((*hw, 3), STATE_DIM, TASK_DIM)
    expected_map = [-(-s // 32) for s in hw]  # five stride-2 convs with padding 1: ceil(s / 32)
    assert enc.trunk_output_shape() == (1, 256, *expected_map)
    assert enc.bottleneck[0].in_features == 256 * expected_map[0] * expected_map[1]
    assert enc(make_obs(2, hw)).shape == (2, enc.feature_dim)


@pytest.mark.parametrize("kind", KINDS)
def test_division_by_255_happens_inside(kind: str) -> None:
    enc = encoder(kind, 48)
    seen: list[torch.Tensor] = []
    handle = first_conv(enc).register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        obs = make_obs(2, 48)
        enc(obs)
        enc({**obs, "image": torch.full_like(obs["image"], 255)})
        enc({**obs, "image": torch.zeros_like(obs["image"])})
    finally:
        handle.remove()
    random_in, white_in, black_in = seen
    assert random_in.dtype == torch.float32 and random_in.shape == (2, 3, 48, 48)
    expected = obs["image"].permute(0, 3, 1, 2).double() / 255.0
    torch.testing.assert_close(random_in.double(), expected, rtol=0, atol=1e-7)
    assert torch.all(white_in == 1.0) and torch.all(black_in == 0.0)
    assert 0.0 <= random_in.min() and random_in.max() <= 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_feature_layout_latent_in_range_then_state_task_unchanged(kind: str) -> None:
    enc = encoder(kind, 48)
    obs = make_obs(4, 48)
    # well outside [-1, 1]: must not be squashed (only the standardisation clip, +-10, bounds it)
    obs["state"] = (obs["state"] * 3.0).clamp(-9.9, 9.9)
    feat = enc(obs)
    latent = feat[:, :LATENT]
    assert latent.abs().max() <= 1.0
    assert latent.std() > 1e-3  # the tanh(LayerNorm) output is not collapsed
    assert torch.equal(feat[:, LATENT : LATENT + STATE_DIM], obs["state"])
    assert torch.equal(feat[:, LATENT + STATE_DIM :], obs["task"])
    torch.testing.assert_close(latent, enc.encode_image(obs["image"]))
    # The latent depends on the image only.
    other = enc({**obs, "state": torch.zeros_like(obs["state"]), "task": torch.zeros_like(obs["task"])})
    torch.testing.assert_close(other[:, :LATENT], latent)


def test_bottleneck_is_linear_layernorm_tanh() -> None:
    enc = encoder("conv", 48)
    kinds = [type(m) for m in enc.bottleneck]
    assert kinds == [nn.Linear, nn.LayerNorm, nn.Tanh]
    assert enc.bottleneck[0].out_features == LATENT


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_reaches_every_trunk_weight_and_state_task_have_no_parameters(kind: str) -> None:
    torch.manual_seed(1)
    enc = ImageStateEncoder((48, 48, 3), STATE_DIM, TASK_DIM, kind=kind, latent_dim=LATENT)
    obs = make_obs(4, 48, seed=1)
    feat = enc(obs)
    feat[:, :LATENT].pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"

    # The state/task part of the feature is the input itself: no parameter influences it.
    enc.zero_grad(set_to_none=True)
    state = obs["state"].clone().requires_grad_(True)
    feat = enc({**obs, "state": state})
    feat[:, LATENT:].sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is None or torch.count_nonzero(p.grad) == 0, f"{name} affects the state/task part"
    torch.testing.assert_close(state.grad, torch.ones_like(state))
    owned = {id(p) for m in (enc.trunk, enc.pool, enc.bottleneck) for p in m.parameters()}
    assert owned == {id(p) for p in enc.parameters()}


def test_conv_trunk_layout_and_orthogonal_init() -> None:
    trunk = ConvTrunk(3, (16, 32, 64, 128, 256))
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs)
    assert sum(isinstance(m, nn.ReLU) for m in trunk.modules()) == 5
    w = convs[0].weight.detach().flatten(1)  # (16, 27): rows orthogonal with gain sqrt(2)
    torch.testing.assert_close(w @ w.T, 2.0 * torch.eye(16), atol=1e-5, rtol=0)
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    custom = ConvTrunk(3, (8, 8))
    assert custom(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8, 8)


def test_resnet_uses_groupnorm_and_maxpool_flag() -> None:
    torch.manual_seed(0)
    with_pool, without_pool = ResNet18Trunk(3), ResNet18Trunk(3, drop_maxpool=True)
    for trunk in (with_pool, without_pool):
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in trunk.modules())
        assert sum(isinstance(m, nn.GroupNorm) for m in trunk.modules()) == 1 + 2 * 8 + 3  # stem, blocks, downsamples
    x = torch.rand(2, 3, 64, 64)
    assert with_pool(x).shape == (2, 512, 2, 2)
    assert without_pool(x).shape == (2, 512, 4, 4)
    assert ResNet18Trunk(9)(torch.rand(1, 9, 64, 64)).shape == (1, 512, 2, 2)  # e.g. 3 stacked frames
    enc = ImageStateEncoder((64, 64, 3), STATE_DIM, TASK_DIM, kind="resnet18", drop_maxpool=True)
    assert isinstance(enc.pool, SpatialLearnedEmbeddings)
    assert enc.bottleneck[0].in_features == 512 * 8


def test_spatial_learned_embeddings_matches_numpy_reference() -> None:
    torch.manual_seed(0)
    sle = SpatialLearnedEmbeddings(channels=5, height=3, width=2, num_features=4)
    x = torch.randn(2, 5, 3, 2)
    k = sle.kernel.detach().numpy()
    ref = (x.numpy()[..., None] * k[None]).sum(axis=(2, 3)).reshape(2, -1)
    np.testing.assert_allclose(sle(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="feature map"):
        sle(torch.randn(2, 5, 2, 3))


def test_from_obs_spec_reads_a_gymnasium_dict_space() -> None:
    space = gym.spaces.Dict(
        {
            "image": gym.spaces.Box(0, 255, (48, 48, 3), np.uint8),
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "task": gym.spaces.Box(0, 1, (TASK_DIM,), np.float32),
        }
    )
    enc = ImageStateEncoder.from_obs_spec(space, latent_dim=LATENT)
    assert (enc.image_shape, enc.state_dim, enc.task_dim) == ((48, 48, 3), STATE_DIM, TASK_DIM)
    no_task = ImageStateEncoder.from_obs_spec({"image": (32, 32, 3), "state": (3,)})
    assert no_task.feature_dim == 50 + 3
    assert no_task({"image": torch.zeros(2, 32, 32, 3, dtype=torch.uint8), "state": torch.zeros(2, 3)}).shape == (2, 53)
    with pytest.raises(KeyError, match="'state'"):
        ImageStateEncoder.from_obs_spec({"image": (32, 32, 3)})


def test_clear_errors_for_bad_inputs() -> None:
    enc = encoder("conv", 48)
    obs = make_obs(2, 48)
    with pytest.raises(TypeError, match=r"obs\['image'\].*uint8.*float32"):
        enc({**obs, "image": obs["image"].float()})
    with pytest.raises(ValueError, match=r"\(B, 48, 48, 3\).*\(2, 48, 48, 4\)"):
        enc({**obs, "image": torch.zeros(2, 48, 48, 4, dtype=torch.uint8)})
    with pytest.raises(ValueError, match=r"\(2, 3, 48, 48\)"):  # channels-first by mistake
        enc({**obs, "image": obs["image"].permute(0, 3, 1, 2)})
    for key in ("image", "state", "task"):
        with pytest.raises(KeyError, match=f"'{key}'"):
            enc({k: v for k, v in obs.items() if k != key})
    with pytest.raises(TypeError, match=r"obs\['state'\].*float64"):
        enc({**obs, "state": obs["state"].double()})
    with pytest.raises(ValueError, match=r"obs\['task'\].*\(2, 4\)"):
        enc({**obs, "task": obs["task"][:, :3]})
    with pytest.raises(ValueError, match=r"obs\['state'\].*\(2, 7\)"):
        enc({**obs, "state": obs["state"][:1]})
    with pytest.raises(TypeError, match=r"obs\['image'\].*Tensor.*ndarray"):
        enc({**obs, "image": obs["image"].numpy()})
    with pytest.raises(ValueError, match="conv.*resnet18"):
        ImageStateEncoder((48, 48, 3), STATE_DIM, TASK_DIM, kind="vit")
    with pytest.raises(ValueError, match="image_shape"):
        ImageStateEncoder((48, 48), STATE_DIM, TASK_DIM)


# ---------------------------------------------------------------- random shift


def reference_crops(images: torch.Tensor, pad: int) -> torch.Tensor:
    """All (2p+1)^2 crops of the replicate-padded images: (B, 2p+1, 2p+1, H, W, C).

    Independent of the gather in encoders/augment.py: it pads with F.pad in float.
    """
    b, h, w, c = images.shape
    padded = F.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate").permute(0, 2, 3, 1)
    n = 2 * pad + 1
    crops = torch.stack([torch.stack([padded[:, i : i + h, j : j + w] for j in range(n)], 1) for i in range(n)], 1)
    return crops.to(torch.uint8)


def matching_offsets(out: torch.Tensor, images: torch.Tensor, pad: int) -> list[list[tuple[int, int]]]:
    crops = reference_crops(images, pad)
    match = (crops == out[:, None, None]).flatten(3).all(-1)  # (B, 2p+1, 2p+1)
    return [[tuple(ij) for ij in torch.nonzero(m).tolist()] for m in match]


def test_random_shift_is_a_replicate_padded_crop_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 10, 9, 3), dtype=torch.uint8, generator=g)
    out = random_shift(images, pad=3, generator=g)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    offsets = matching_offsets(out, images, 3)
    assert all(len(o) >= 1 for o in offsets), "some output is not a crop at any offset in [0, 2*pad]"
    # Every output pixel exists in the (replicate-)padded input, i.e. in the input sample itself.
    for b in range(images.shape[0]):
        assert torch.isin(out[b].flatten(), images[b].flatten()).all()
    assert len({o[0] for o in offsets}) > 1, "offsets do not vary across samples"


def test_random_shift_offsets_cover_exactly_zero_to_two_pad() -> None:
    pad, h, w = 2, 8, 8
    ramp = (torch.arange(h)[:, None] * 16 + torch.arange(w)[None, :]).to(torch.uint8)  # every pixel distinct
    images = ramp[None, :, :, None].expand(256, h, w, 3).contiguous()
    out = random_shift(images, pad=pad, generator=torch.Generator().manual_seed(1))
    offsets = matching_offsets(out, images, pad)
    assert all(len(o) == 1 for o in offsets)  # distinct pixels: the offset is identified uniquely
    rows = {o[0][0] for o in offsets}
    cols = {o[0][1] for o in offsets}
    assert rows == cols == set(range(2 * pad + 1))  # both extremes reached, nothing outside
    pairs = [o[0] for o in offsets]
    assert len(set(pairs)) > (2 * pad + 1)  # rows and cols drawn independently


def test_shift_by_offsets_matches_reference_crop_at_every_offset() -> None:
    pad = 2
    images = torch.randint(0, 256, (9, 6, 7, 3), dtype=torch.uint8).permute(0, 2, 1, 3)  # non-contiguous (B,7,6,3)
    every_offset = torch.cartesian_prod(torch.arange(2 * pad + 1), torch.arange(2 * pad + 1))  # (25, 2)
    for k in range(0, len(every_offset), 9):  # 9 samples at a time
        offsets = every_offset[k : k + 9]
        out = shift_by_offsets(images[: len(offsets)], offsets, pad)
        ref = reference_crops(images[: len(offsets)], pad)
        expected = ref[torch.arange(len(offsets)), offsets[:, 0], offsets[:, 1]]
        assert torch.equal(out, expected)
    assert random_shift(images[:0], pad).shape == (0, 7, 6, 3)  # empty batch is fine


def test_random_shift_pad_zero_identity_and_generator_determinism() -> None:
    images = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8)
    assert torch.equal(random_shift(images, pad=0), images)
    a = random_shift(images, 4, torch.Generator().manual_seed(7))
    b = random_shift(images, 4, torch.Generator().manual_seed(7))
    c = random_shift(images, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, images)  # input left untouched and output shifted
    before = images.clone()
    random_shift(images, 4)
    assert torch.equal(images, before)


def test_random_shift_errors() -> None:
    with pytest.raises(TypeError, match="uint8.*float32"):
        random_shift(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match=r"\(B,H,W,C\).*\(8, 8, 3\)"):
        random_shift(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="pad.*-1"):
        random_shift(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), pad=-1)
    with pytest.raises(TypeError, match="Tensor"):
        random_shift(np.zeros((2, 8, 8, 3), np.uint8))


def test_random_shift_module_touches_image_only_and_is_identity_in_eval() -> None:
    obs = make_obs(8, 32)
    aug = RandomShift(pad=4)
    out = aug(obs, generator=torch.Generator().manual_seed(0))
    assert out is not obs and set(out) == set(obs)
    assert out["state"] is obs["state"] and out["task"] is obs["task"]
    assert out["image"].dtype == torch.uint8 and out["image"].shape == obs["image"].shape
    assert not torch.equal(out["image"], obs["image"])
    assert all(len(o) >= 1 for o in matching_offsets(out["image"], obs["image"], 4))
    # obs and next obs augmented independently: two calls draw different offsets.
    assert not torch.equal(aug(obs)["image"], aug(obs)["image"])
    aug.eval()
    evaluated = aug(obs)
    assert evaluated is not obs and evaluated["image"] is obs["image"]
    assert RandomShift(pad=0)(obs)["image"] is obs["image"]
    with pytest.raises(KeyError, match="'image'"):
        RandomShift()({"state": obs["state"]})
    with pytest.raises(ValueError, match="pad"):
        RandomShift(pad=-2)


def test_augmented_batch_flows_through_encoder_with_gradients() -> None:
    enc = encoder("conv", 48)
    aug = RandomShift(4)
    obs, next_obs = make_obs(4, 48, seed=2), make_obs(4, 48, seed=3)
    feats = enc(aug(obs)), enc(aug(next_obs))
    loss = sum(f[:, :LATENT].pow(2).mean() for f in feats)
    enc.zero_grad(set_to_none=True)
    loss.backward()
    assert first_conv(enc).weight.grad.abs().sum() > 0


def test_spatial_softmax_finds_a_peak_and_matches_numpy() -> None:
    # identity keypoint maps: each keypoint is one input channel
    ss = SpatialSoftmax(channels=2, height=5, width=4, num_keypoints=2)
    with torch.no_grad():
        ss.keypoints.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        ss.keypoints.bias.zero_()
    x = torch.zeros(1, 2, 5, 4)
    x[0, 0, 4, 0] = 50.0  # channel 0 peaks at the bottom-left corner: (x, y) = (-1, 1)
    out = ss(x)  # channel 1 is flat: the mean of the grid, (0, 0)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0, 0.0]]), atol=1e-4, rtol=0)
    torch.manual_seed(0)
    ss = SpatialSoftmax(channels=3, height=3, width=6, num_keypoints=4, temperature=0.5)
    x = torch.randn(2, 3, 3, 6)
    w, b = ss.keypoints.weight.detach().numpy()[:, :, 0, 0], ss.keypoints.bias.detach().numpy()
    logits = (np.einsum("kc,bchw->bkhw", w, x.numpy()) + b[None, :, None, None]).reshape(2, 4, -1) / 0.5
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ys, xs = np.meshgrid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 6), indexing="ij")
    ref = np.concatenate([p @ xs.reshape(-1), p @ ys.reshape(-1)], axis=1)
    np.testing.assert_allclose(ss(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_keypoint_encoder_layout() -> None:
    enc = ImageStateEncoder((48, 48, 3), STATE_DIM, TASK_DIM, kind="keypoints")
    assert enc.trunk_output_shape() == (1, 64, 12, 12) and isinstance(enc.pool, SpatialSoftmax)
    assert enc.bottleneck[0].in_features == 64  # 32 keypoints x (x, y)
    obs = {"image": torch.randint(0, 256, (3, 48, 48, 3), dtype=torch.uint8),
           "state": torch.zeros(3, STATE_DIM), "task": torch.zeros(3, TASK_DIM)}
    assert enc(obs).shape == (3, enc.feature_dim)
    assert all(c.stride == (s, s) for c, s in zip((m for m in enc.trunk.modules() if isinstance(m, nn.Conv2d)),
                                                 (2, 2, 1)))
    with pytest.raises(ValueError, match="one positive stride per layer"):
        ConvTrunk(3, (8, 8), stride=(2,))
