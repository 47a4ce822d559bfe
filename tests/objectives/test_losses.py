"""The preference losses against their formulas on fixed tensors (DPO, ORPO, KTO, CPO/SimPO, Bradley-Terry), CPO's
against TRL's own, and the DPO loss types against the ones TRL documents."""

from __future__ import annotations

import math

import pytest
import torch

from oneml.objectives.losses import bradley_terry_loss, cpo_loss, dpo_loss, kto_loss, log_odds, orpo_loss


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


def test_kto_loss_matches_formula():
    policy, ref = torch.tensor([-10.0, -4.0, -7.0]), torch.tensor([-11.0, -4.5, -6.0])
    desirable = torch.tensor([True, False, False])
    beta, w_d, w_u, kl = 0.2, 1.5, 0.5, torch.tensor(0.3)
    loss, reward = kto_loss(policy, ref, desirable, kl, beta, w_d, w_u)
    for i in range(3):
        r = (policy[i] - ref[i]).item()
        want = w_d * (1 - sigmoid(beta * (r - 0.3))) if desirable[i] else w_u * (1 - sigmoid(beta * (0.3 - r)))
        assert loss[i].item() == pytest.approx(want, rel=1e-6) and reward[i].item() == pytest.approx(beta * r)
    # z0 is clamped at 0: a negative KL estimate counts as none; APO-zero ignores it.
    assert torch.equal(kto_loss(policy, ref, desirable, torch.tensor(-2.0), beta)[0],
                       kto_loss(policy, ref, desirable, torch.tensor(0.0), beta)[0])  # fmt: skip
    apo, _ = kto_loss(policy, ref, desirable, kl, beta, loss_type="apo_zero_unpaired")
    assert apo[1].item() == pytest.approx(sigmoid(beta * (policy[1] - ref[1]).item()), rel=1e-6)


@pytest.mark.parametrize("loss_type", ["sigmoid", "hinge", "ipo", "simpo"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cpo_loss_is_trls(loss_type, smoothing):
    from types import SimpleNamespace

    from trl.experimental.cpo import CPOTrainer

    chosen, rejected = torch.tensor([-3.0, -1.2, -0.4]), torch.tensor([-2.5, -2.0, -0.9])
    smoothing = smoothing if loss_type in ("sigmoid", "simpo") else 0.0
    fake = SimpleNamespace(alpha=0.0, beta=0.7, loss_type=loss_type, label_smoothing=smoothing, simpo_gamma=0.4,
                           accelerator=SimpleNamespace(device="cpu"))  # fmt: skip
    want, *_ = CPOTrainer.cpo_loss(fake, chosen, rejected)
    torch.testing.assert_close(cpo_loss(chosen, rejected, 0.7, loss_type, smoothing, 0.4), want)


def test_bradley_terry_loss_matches_formula():
    chosen, rejected = torch.tensor([1.0, -0.5]), torch.tensor([0.2, 0.5])
    for i, got in enumerate(bradley_terry_loss(chosen, rejected)):
        assert got.item() == pytest.approx(-math.log(sigmoid((chosen[i] - rejected[i]).item())), rel=1e-6)


def test_dpo_loss_types_are_the_ones_trl_documents():
    """DPOConfig's loss_type help lists its losses; an upgrade that adds or drops one fails here."""
    import re

    from trl import DPOConfig

    from oneml.objectives.dpo import DPO_LOSS_TYPES

    documented = re.findall(r"`'(\w+)'`", DPOConfig.__dataclass_fields__["loss_type"].metadata["help"])
    assert sorted(documented) == sorted(DPO_LOSS_TYPES)
