"""DPO and ORPO losses against their formulas on fixed tensors, and against TRL's own computation."""

from __future__ import annotations

import math

import pytest
import torch

from oneml.objectives.losses import dpo_loss, log_odds, orpo_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_dpo_loss_matches_formula():
    pi_w, pi_l = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    ref_w, ref_l = torch.tensor([-11.0, -4.5]), torch.tensor([-11.5, -3.5])
    beta = 0.2
    loss, chosen, rejected = dpo_loss(pi_w, pi_l, ref_w, ref_l, beta)
    for i in range(2):
        z = beta * ((pi_w[i] - ref_w[i]) - (pi_l[i] - ref_l[i])).item()
        assert loss[i].item() == pytest.approx(-math.log(sigmoid(z)), rel=1e-6)
        assert chosen[i].item() == pytest.approx(beta * (pi_w[i] - ref_w[i]).item())
        assert rejected[i].item() == pytest.approx(beta * (pi_l[i] - ref_l[i]).item())
    # At the reference the loss is log 2 whatever the data.
    same = torch.tensor([-3.0])
    assert dpo_loss(same, same - 1, same, same - 1, 0.5)[0].item() == pytest.approx(math.log(2))


def test_log_odds_and_orpo_loss_match_formula():
    mean_w, mean_l = torch.tensor([-0.5, -2.0]), torch.tensor([-1.5, -1.0])
    p = mean_w.exp()
    assert torch.allclose(log_odds(mean_w), torch.log(p / (1 - p)))
    lam = 0.3
    nll = -mean_w
    loss, ratio = orpo_loss(nll, mean_w, mean_l, lam)
    for i in range(2):
        pw, pl = math.exp(mean_w[i].item()), math.exp(mean_l[i].item())
        r = math.log(pw / (1 - pw)) - math.log(pl / (1 - pl))
        assert ratio[i].item() == pytest.approx(r, rel=1e-5)
        assert loss[i].item() == pytest.approx(nll[i].item() - lam * math.log(sigmoid(r)), rel=1e-5)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pi_w = torch.tensor([-5.0], requires_grad=True)
    pi_l = torch.tensor([-5.0], requires_grad=True)
    loss, _, _ = dpo_loss(pi_w, pi_l, torch.tensor([-5.0]), torch.tensor([-5.0]), 0.1)
    loss.sum().backward()
    assert pi_w.grad.item() < 0 < pi_l.grad.item()


def test_preference_accuracy_counts_ties_as_half():
    """#17: before training every DPO reward margin is exactly 0 (policy == reference); "accuracy 0.000" misread
    that coin toss. A tie counts half."""
    import torch

    from oneml.objectives.preference import preference_accuracy

    assert preference_accuracy(torch.zeros(8)) == 0.5
    assert preference_accuracy(torch.tensor([1.0, -1.0, 0.0, 2.0])) == 0.625
    assert preference_accuracy(torch.tensor([0.3, 0.1])) == 1.0
