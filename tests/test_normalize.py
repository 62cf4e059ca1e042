"""The fixed observation standardisation (encoders/normalize.py), against NumPy by hand."""

from __future__ import annotations

import numpy as np
import torch

from encoders.image_state import ImageStateEncoder
from encoders.normalize import CLIP, STD_FLOOR, ObsNormalizer


def _reference(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The rule written out: constant dims are centred only, the others divided by at least
    STD_FLOOR, and the result clipped to +-CLIP."""
    divisor = np.where(std < 1e-6, 1.0, np.maximum(std, STD_FLOOR))
    return np.clip((x - mean) / divisor, -CLIP, CLIP)


def test_normalizer_floors_jitter_dims_and_clips() -> None:
    # columns: an ordinary metre-scale dim, a jitter dim (like the hand quaternion's y), a
    # constant one-hot dim, and a dim with a far outlier
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(0.4, 0.1, 5000), rng.normal(0.0, 1.6e-4, 5000), np.ones(5000),
                     rng.normal(0.0, 0.05, 5000)], axis=1)
    norm = ObsNormalizer.from_data(data)
    std = data.std(axis=0)
    np.testing.assert_allclose(norm.std.numpy(), [std[0], STD_FLOOR, 1.0, std[3]], rtol=1e-5)
    probe = np.array([[0.5, 0.02, 1.0, 0.0], [0.4, -0.5, 0.0, 3.0], [-1.0, 0.0, 1.0, -3.0]], np.float32)
    got = norm(torch.from_numpy(probe)).numpy()
    want = _reference(probe, data.mean(axis=0), std)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # a tilt of 0.02 reads 2 floors off (not 125 stds); the outliers are clipped
    assert abs(got[0, 1] - 2.0) < 1e-3 and got[1, 1] == -CLIP and got[1, 3] == CLIP and got[2, 3] == -CLIP
    # a constant dim that changes is centred, not scaled
    assert got[1, 2] == -1.0


def test_image_state_encoder_uses_the_same_rule() -> None:
    enc = ImageStateEncoder((16, 16, 3), state_dim=3, task_dim=0, latent_dim=4)
    mean, std = np.array([0.1, 0.0, 1.0]), np.array([0.2, 1e-4, 0.0])
    enc.set_state_normalization(mean, std)
    state = np.array([[0.3, 0.05, 2.0], [5.0, -0.5, 1.0]], np.float32)
    obs = {"image": torch.zeros(2, 16, 16, 3, dtype=torch.uint8), "state": torch.from_numpy(state)}
    got = enc(obs)[:, enc.latent_dim:].detach().numpy()
    np.testing.assert_allclose(got, _reference(state, mean, std), rtol=1e-5, atol=1e-5)
