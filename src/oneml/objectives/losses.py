"""Preference losses and rewards as small pure functions over explicit per-sequence tensors.

Every input is a (B,) tensor of per-sequence quantities; the trainers (TRL) compute the same
quantities in their own code, and tests check both against these formulas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), eq. 7:

        L = -log sigma( beta * ((log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))) )

    Inputs are summed log-probabilities of each completion, (B,). Returns (loss (B,), chosen reward
    beta*(pi_w - ref_w) (B,), rejected reward beta*(pi_l - ref_l) (B,)).
    """
    chosen_reward = beta * (policy_chosen - ref_chosen)  # (B,)
    rejected_reward = beta * (policy_rejected - ref_rejected)  # (B,)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward, rejected_reward


def log_odds(mean_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) for p = exp(mean_logp), computed stably: mean_logp - log(1 - exp(mean_logp))."""
    return mean_logp - torch.log1p(-torch.exp(mean_logp).clamp(max=1 - 1e-7))


def orpo_loss(
    chosen_nll: torch.Tensor, chosen_mean_logp: torch.Tensor, rejected_mean_logp: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al. 2024, https://arxiv.org/abs/2403.07691), eq. 6-7:

        L = L_SFT + lambda * -log sigma( log odds(y_w|x) - log odds(y_l|x) ),  odds(y|x) = p / (1 - p)

    with p = exp(mean token log-prob of the completion) and L_SFT the chosen completion's token-mean
    negative log-likelihood, all (B,). Returns (loss (B,), log odds ratio (B,)).
    """
    ratio = log_odds(chosen_mean_logp) - log_odds(rejected_mean_logp)  # (B,)
    return chosen_nll - lam * F.logsigmoid(ratio), ratio


def kto_loss(
    policy: torch.Tensor,
    ref: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    loss_type: str = "kto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306), eq. 7-8, per example:

        r   = log pi(y|x) - log ref(y|x),   z0 = max(0, KL estimate)
        L_D = w_D (1 - sigma(beta (r - z0)))      (y desirable)
        L_U = w_U (1 - sigma(beta (z0 - r)))      (y undesirable)

    ``loss_type="apo_zero_unpaired"`` (APO-zero, https://arxiv.org/abs/2408.06266, unpaired): L_D = w_D (1 - sigma(beta
    r)), L_U = w_U sigma(beta r), no z0. ``policy``, ``ref``: summed completion log-probs (B,); ``desirable``: bool
    (B,); ``kl``: the scalar z0 estimate before the clamp. Returns (loss (B,), reward beta * r (B,)).
    """
    ratio = policy - ref  # (B,)
    z0 = kl.clamp(min=0) if loss_type == "kto" else torch.zeros_like(kl)
    good = 1 - torch.sigmoid(beta * (ratio - z0))
    bad = 1 - torch.sigmoid(beta * (z0 - ratio))
    loss = torch.where(desirable, desirable_weight * good, undesirable_weight * bad)
    return loss, beta * ratio


def cpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
) -> torch.Tensor:
    """CPO's preference term (Xu et al. 2024, https://arxiv.org/abs/2401.08417, eq. 3), per pair, over the policy's
    completion log-probs alone (no reference): summed for sigmoid and hinge, token means for ipo and simpo (B,):

        sigmoid: -log sigma(beta (c - r))  (conservative with label smoothing e: (1 - e) of it + e of the flipped)
        hinge:   max(0, 1 - beta (c - r))                 ipo: ((c - r) - 1 / (2 beta))^2
        simpo:   -log sigma(beta (c - r) - gamma)   (SimPO, Meng et al. 2024, https://arxiv.org/abs/2405.14734, eq. 6)

    The full CPO loss adds alpha x the chosen answer's NLL (`cpo_alpha`); SimPO is the simpo term with alpha = 0.
    """
    logits = chosen - rejected  # (B,)
    if loss_type == "simpo":
        logits = logits - simpo_gamma / beta
    if loss_type in ("sigmoid", "simpo"):
        return -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    if loss_type == "hinge":
        return torch.relu(1 - beta * logits)
    if loss_type == "ipo":
        return (logits - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown CPO loss type {loss_type!r}")


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """The reward model's pairwise loss (Bradley-Terry; Ouyang et al. 2022, https://arxiv.org/abs/2203.02155, eq. 1):
    L = -log sigma(r(x, y_w) - r(x, y_l)) over the scalar rewards of each pair (B,)."""
    return -F.logsigmoid(chosen - rejected)
