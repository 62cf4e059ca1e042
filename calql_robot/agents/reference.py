"""The learned reference value of the Cal-QL bound (Nakamoto et al. 2023, Appendix G):
`--learner.reference learned`.

Cal-QL bounds the Q-values of policy actions below by a reference value, Q^mu of the
behaviour policy (Eq. A.1: `max(Q_theta(s, a), Q^mu(s, a))`). The paper's runs, and
`--learner.reference mc`, take the Monte-Carlo return-to-go G(s, a) of the data row for it
(Listing 1: `max(q_pi, batch['mc_return'])`). Appendix G replaces that estimate by "a neural
network function approximator Q^mu_theta ... via supervised regression on to Monte-Carlo
return, which is then utilized by Cal-QL" (Kitchen; Figure 11: performance "comparable").

What this module decides, and why:
- Q^mu_theta is a Q-function of the data: one critic-shaped MLP on concat[features, a]
  (`CriticEnsemble` of one member, the critics' widths), fitted by MSE on (s, a) -> G of
  offline rows (uniform batches with replacement), once, before the first update; then it
  is frozen. The paper gives no steps, rate or architecture; the defaults are
  `CalQLConfig.reference_steps` and `reference_lr`.
- It is evaluated at the row's DATA action, Q^mu_theta(s, a_data): the drop-in for G(s, a)
  of Listing 1 (one value per row, used for every policy sample of that row), which is
  what Appendix G says the network replaces. Eq. A.1 writes Q^mu(s, a) at the policy's a;
  evaluating the regressor there would extrapolate it to actions the data never took,
  where an over-estimate would lift the bound and undo CQL's conservatism. This follows
  the implementation, not the letter of Eq. A.1.
- Online rows keep their own Monte-Carlo return. Appendix G's reference is learned from
  the offline data, for the case where its returns "may not be available"; an online
  episode always ends with its G in hand, and the official code bounds online rows by it
  (`calibrate_online`). So a mixed batch is bounded by Q^mu_theta on its offline rows and
  by G on its online rows (`data/mixing.py` puts the `n_offline` offline rows first). Our
  reading; Appendix G does not say.
- Observations: Q^mu_theta has its own copy of the encoder slot, taken when the learner is
  built and trained by the regression alone (for states the copy is the fixed observation
  normaliser; for images a conv encoder of its own). Features of the shared encoder would
  drift under it as the critic trains that encoder, so a fit made before pre-training
  would stop matching its inputs. No augmentation, fp32 throughout (it is read under
  no_grad, outside `--run.precision bf16`'s autocast).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from calql_robot.agents.base import BatchSource, batch_to_torch
from calql_robot.networks import CriticEnsemble

FIT_WINDOW = 100
"""Fit-loss metrics average this many steps at the start and at the end of the fit."""
SCALE_ROWS = 2048
"""Offline rows drawn once, before the fit, for the target's mean and std."""


class ReferenceQ(nn.Module):
    """Q^mu_theta(s, a) = mean_G + std_G * f(enc(s), a): an encoder (a copy of the learner's
    slot) and one critic MLP f, on a standardised target. Returns reach -500 on failure-rule
    data (SPEC section 2) while the critic's output layer starts at ~0 (gain 1e-2): unscaled,
    200 Adam steps moved the fit loss of the pick-and-place data only from 1.5e5 to 1.2e5.
    The statistics are buffers, so they travel in the state dict."""

    def __init__(self, encoder: nn.Module, feature_dim: int, action_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = encoder
        self.q = CriticEnsemble(1, feature_dim, action_dim, hidden, True)
        self.register_buffer("g_mean", torch.zeros(()))
        self.register_buffer("g_std", torch.ones(()))

    def forward(self, obs, actions: torch.Tensor) -> torch.Tensor:
        """(B,) values of the (B, A) actions at obs."""
        return self.g_mean + self.g_std * self.q(self.encoder(obs), actions.unsqueeze(0))[0, 0]

    @torch.no_grad()
    def set_target_scale(self, returns: torch.Tensor) -> None:
        """Standardise the target by these returns' mean and std (std floored at 1e-3 of the
        scale, so constant returns still give a finite fit)."""
        self.g_mean.copy_(returns.mean())
        self.g_std.copy_(returns.std(unbiased=False).clamp(min=1e-3 * max(1.0, float(returns.abs().max()))))


def fit_reference(reference: ReferenceQ, source: BatchSource, steps: int, lr: float, batch_size: int,
                  rng: np.random.Generator, device: torch.device,
                  prepare_actions: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """Regress `reference` on the Monte-Carlo returns of `source`'s rows: `steps` Adam steps
    of `mean((Q^mu_theta(s, a) - G)^2)` on uniform batches (drawn with the loop's `rng`).
    `prepare_actions` maps the batch's actions as the critic sees them (clipped, gripper
    snapped). The loss is taken in return units (the network's standardised output scaled
    back), so the metrics read as squared returns. Returns the fit's metrics: the loss over
    its first and last `FIT_WINDOW` steps and the variance of G over the last ones (loss /
    variance = 1 - R^2)."""
    reference.set_target_scale(batch_to_torch(source.sample(SCALE_ROWS, rng), device)["mc_returns"].float())
    opt = torch.optim.Adam(reference.parameters(), lr=lr)
    window = min(FIT_WINDOW, steps)
    losses, last = [], []
    for step in range(steps):
        batch = batch_to_torch(source.sample(batch_size, rng), device)
        g = batch["mc_returns"].float()
        loss = (reference(batch["observations"], prepare_actions(batch["actions"])) - g).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())  # no sync per step: read once at the end
        if step >= steps - window:
            last.append(g)
    last = torch.cat(last)
    stacked = torch.stack(losses)
    return {"fit_loss_start": float(stacked[:window].mean()), "fit_loss_end": float(stacked[-window:].mean()),
            "return_var": float(last.var(unbiased=False)), "fit_steps": float(steps)}


@torch.no_grad()
def bound_reference(reference: ReferenceQ, batch: dict, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bound's (B,) reference values for a batch: Q^mu_theta(s, a_data) on its offline
    rows (the first `batch["n_offline"]`; all rows when the key is absent, as in an offline
    batch), G on its online rows. Returns (values, the offline-row mask)."""
    g = batch["mc_returns"]
    offline = torch.arange(g.shape[0], device=g.device) < int(batch.get("n_offline", g.shape[0]))
    learned = reference(batch["observations"], actions).to(g.dtype)
    return torch.where(offline, learned, g), offline
