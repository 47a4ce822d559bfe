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
