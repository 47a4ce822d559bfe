"""SORSA: orthonormal A, B with singular values apart; the regularizer and its gradient; the (gamma/lr) step."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from methodkit import CTX, tiny
from transformers import Trainer, TrainingArguments

from oneml.methods.sorsa import (
    OrthonormalStep,
    SORSAConfig,
    orthonormal_gradients,
    orthonormal_regularizer,
    singular_vectors,
)
from oneml.methods.targets import adapted_layers


def test_regularizer_on_a_hand_computed_case():
    A = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # A A^T - I = diag(3, 0)
    B = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # B^T B - I = diag(0, -1)
    assert orthonormal_regularizer([(A, B)], weight=0.5).item() == pytest.approx(0.5 * (9 + 1))
    gA, gB = orthonormal_gradients(A, B, weight=0.5)
    assert torch.equal(gA, torch.tensor([[12.0, 0, 0], [0, 0, 0]]))  # 4 * 0.5 * diag(3, 0) @ A
    assert torch.equal(gB, torch.zeros(3, 2))  # 4 * 0.5 * B @ diag(0, -1): B's second column is 0


def test_regularizer_gradient_matches_autograd_and_the_formula():
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(4, 9, generator=gen), torch.randn(7, 4, generator=gen)) for _ in range(2)]
    leaves = [(A.clone().requires_grad_(), B.clone().requires_grad_()) for A, B in pairs]
    value = orthonormal_regularizer(leaves, weight=0.3)
    expected = sum(
        0.3 * (((A @ A.T - torch.eye(4)) ** 2).sum() + ((B.T @ B - torch.eye(4)) ** 2).sum()) for A, B in pairs
    )
    torch.testing.assert_close(value, expected)
    value.backward()
    for (A, B), (leaf_a, leaf_b) in zip(pairs, leaves, strict=True):
        gA, gB = orthonormal_gradients(A, B, weight=0.3)
        torch.testing.assert_close(leaf_a.grad, gA)
        torch.testing.assert_close(leaf_b.grad, gB)
        torch.testing.assert_close(gA, 4 * 0.3 * (A @ A.T - torch.eye(4)) @ A)
        torch.testing.assert_close(gB, 4 * 0.3 * B @ (B.T @ B - torch.eye(4)))


def test_init_splits_the_singular_values_off_orthonormal_factors():
    original = {n: m.weight.detach().clone() for n, m in tiny().named_modules() if isinstance(m, torch.nn.Linear)}
    cfg = SORSAConfig(r=4, alpha=8)
    model = cfg.apply(tiny(), CTX)
    pairs = singular_vectors(model)
    assert orthonormal_regularizer(pairs).item() < 1e-10
    for (name, layer, a), (A, B) in zip(adapted_layers(model), pairs, strict=True):
        S = torch.linalg.svdvals(original[name])[:4]
        s_vec = layer.lora_A[a].parametrizations.weight[0].s
        torch.testing.assert_close(s_vec, S / cfg.scaling, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.lora_A[a].weight, s_vec.unsqueeze(1) * A)  # effective A = diag(S) A
        W = layer.get_base_layer().weight + cfg.scaling * layer.lora_B[a].weight @ layer.lora_A[a].weight
        torch.testing.assert_close(W, original[name], atol=2e-6, rtol=0)
        assert A.requires_grad and B.requires_grad and s_vec.requires_grad


def test_callback_adds_gamma_over_lr_times_the_gradient_before_the_step():
    gen = torch.Generator().manual_seed(0)
    A = torch.nn.Parameter(torch.randn(3, 8, generator=gen))
    B = torch.nn.Parameter(torch.randn(6, 3, generator=gen))
    task_grad_a, task_grad_b = torch.randn(3, 8, generator=gen), torch.randn(6, 3, generator=gen)
    A.grad, B.grad = task_grad_a.clone(), task_grad_b.clone()
    lr, gamma = 0.05, 4e-3
    gA, gB = orthonormal_gradients(A.detach(), B.detach())
    expected_a = A.detach() - lr * task_grad_a - gamma * gA  # SGD: the regularizer moves by exactly gamma * grad
    expected_b = B.detach() - lr * task_grad_b - gamma * gB
    optimizer = torch.optim.SGD([A, B], lr=lr)
    OrthonormalStep([(A, B)], gamma, CTX).on_pre_optimizer_step(SimpleNamespace(learning_rate=lr), None, None)
    optimizer.step()
    torch.testing.assert_close(A.detach(), expected_a)
    torch.testing.assert_close(B.detach(), expected_b)


def _one_step(gamma: float, tmp_path) -> tuple[float, torch.Tensor]:
    torch.manual_seed(0)
    model = SORSAConfig(r=4, dropout=0.0).apply(tiny(), CTX)
    A, _ = singular_vectors(model)[0]
    with torch.no_grad():  # far from orthonormal, so that the regularizer's gradient is large
        A.mul_(1.5)
    ids = torch.randint(0, 255, (16,), generator=torch.Generator().manual_seed(2))
    data = [{"input_ids": ids, "labels": ids}] * 2
    args = TrainingArguments(
        output_dir=str(tmp_path / f"g{gamma}"),
        max_steps=1,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        max_grad_norm=1.0,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    callback = OrthonormalStep(singular_vectors(model), gamma, CTX)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.train()
    return trainer.state.log_history[0]["grad_norm"], A.detach().clone()


def test_logged_grad_norm_excludes_the_regularizer(tmp_path):
    norm_without, a_without = _one_step(0.0, tmp_path)
    norm_with, a_with = _one_step(1.0, tmp_path)
    assert norm_with == pytest.approx(norm_without, rel=1e-6)
    assert (a_with - a_without).abs().max() > 1e-4  # while the step itself did change
