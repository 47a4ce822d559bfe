"""The chunked LM head equals the unfused computation (full logits, log-softmax) in loss and gradients, fp32:
for the bare function, and for SFT, DPO, ORPO and CPO/SimPO through a tiny model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from oneml.config import ModelConfig
from oneml.models import load_model_and_tokenizer
from oneml.models.lm_head import (
    STATS,
    chunked_cross_entropy,
    chunked_log_probs,
    install_chunked_head,
    unsupported_reason,
)
from oneml.objectives.losses import cpo_loss, dpo_loss, orpo_loss

TOL = dict(rtol=1e-5, atol=1e-6)


def naive_log_probs(hidden, weight, targets, bias=None):
    logits = hidden @ weight.t() + (0 if bias is None else bias)  # (N, V)
    return logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)


@pytest.mark.parametrize("chunk_rows,chunk_cols", [(None, None), (1, 300), (7, 64), (5, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_log_probs_and_gradients_equal_the_full_logits(chunk_rows, chunk_cols, with_bias):
    gen = torch.Generator().manual_seed(0)
    n, h, v = 23, 16, 301
    hidden = torch.randn(n, h, generator=gen, requires_grad=True)
    weight = torch.randn(v, h, generator=gen).mul_(0.3).requires_grad_()
    bias = torch.randn(v, generator=gen).requires_grad_() if with_bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)  # any per-token weights, as DPO's per-sequence sums give
    inputs = [hidden, weight] + ([bias] if with_bias else [])

    ours, entropy, top1, mean_logits = chunked_log_probs(
        hidden, weight, targets, bias, chunk_rows=chunk_rows, chunk_cols=chunk_cols, stats=STATS
    )
    grads = torch.autograd.grad((ours * upstream).sum(), inputs)
    ref = naive_log_probs(hidden, weight, targets, bias)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), inputs)

    torch.testing.assert_close(ours, ref, **TOL)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)
    logits = (hidden @ weight.t() + (0 if bias is None else bias)).detach()
    probs = logits.softmax(-1)
    torch.testing.assert_close(entropy, -(probs * probs.log()).sum(-1), **TOL)
    torch.testing.assert_close(top1, (logits.argmax(-1) == targets).float())
    torch.testing.assert_close(mean_logits, logits.mean(-1), **TOL)


def test_cross_entropy_skips_ignored_labels_like_torch():
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(12, 8, generator=gen, requires_grad=True)
    weight = torch.randn(50, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 50, (12,), generator=gen)
    labels[[0, 3, 4]] = -100
    ours = chunked_cross_entropy(hidden, weight, labels)
    ref = F.cross_entropy(hidden @ weight.t(), labels)
    torch.testing.assert_close(ours, ref, **TOL)
    torch.testing.assert_close(
        torch.autograd.grad(ours, [hidden, weight]), torch.autograd.grad(ref, [hidden, weight]), **TOL
    )


@pytest.fixture(scope="module")
def lora_pair():
    """The same tiny LoRA model twice: one keeps the plain head, the other gets the chunked head."""
    torch.manual_seed(0)
    base = load_model_and_tokenizer(ModelConfig(name="tiny-qwen2"))[0]
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    chunked = copy.deepcopy(model)
    install_chunked_head(chunked, stats=("entropy", "is_top1", "mean_logits"))
    return model.train(), chunked.train()


def batch(seed=3):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 250, (3, 14), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0  # right padding
    mask[2, 6:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # a prompt
    return ids, mask, labels


def trainable_grads(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params)


def test_sft_loss_and_gradients_equal_the_models_own_loss(lora_pair):
    plain, chunked = lora_pair
    ids, mask, labels = batch()
    ref = plain(input_ids=ids, attention_mask=mask, labels=labels).loss  # transformers' full-logits cross-entropy
    out = chunked(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    torch.testing.assert_close(out.loss, ref, **TOL)
    for got, want in zip(trainable_grads(chunked, out.loss), trainable_grads(plain, ref), strict=True):
        torch.testing.assert_close(got, want, **TOL)
    with torch.no_grad():  # the trainer's token accuracy and our eval read is_top1 / label_mask
        logits = plain(input_ids=ids, attention_mask=mask).logits[:, :-1]
        out = chunked(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    keep = labels[:, 1:] != -100
    assert torch.equal(out.label_mask, keep)
    assert torch.equal(out.is_top1[keep], logits.argmax(-1)[keep] == labels[:, 1:][keep])


def sequence_sums(model, ids, mask, labels, chunked: bool) -> torch.Tensor:
    """Summed completion log-probs per sequence (B,): DPO's policy term."""
    if chunked:
        return model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).log_probs.sum(-1)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    shifted = labels[:, 1:]
    per_token = logits.log_softmax(-1).gather(-1, shifted.clamp(min=0)[..., None]).squeeze(-1)
    return (per_token * (shifted != -100)).sum(-1)


def test_dpo_loss_and_gradients_equal_the_full_logits(lora_pair):
    plain, chunked = lora_pair
    ids, mask, labels = batch()
    ref_scores = torch.tensor([-40.0, -31.0, -22.0])  # a frozen reference: constants
    losses = {}
    for name, model in (("plain", plain), ("chunked", chunked)):
        sums = sequence_sums(model, ids, mask, labels, chunked=name == "chunked")  # rows: chosen 0, rejected 1, 2
        loss = dpo_loss(sums[:1].expand(2), sums[1:], ref_scores[:1].expand(2), ref_scores[1:], beta=0.1)[0].mean()
        losses[name] = (loss, trainable_grads(model, loss))
    torch.testing.assert_close(losses["chunked"][0], losses["plain"][0], **TOL)
    for got, want in zip(losses["chunked"][1], losses["plain"][1], strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_orpo_chunked_forward_equals_trls_logits_path(lora_pair):
    from types import SimpleNamespace

    from trl.experimental.orpo import ORPOTrainer

    from oneml.objectives.orpo import chunked_forward

    plain, chunked = lora_pair
    ids, mask, labels = batch()
    rows = {"chosen": (ids[:2], mask[:2], labels[:2]), "rejected": (ids[1:], mask[1:], labels[1:])}
    batch_ = {
        f"{side}_{k}": v
        for side, t in rows.items()
        for k, v in zip(("input_ids", "attention_mask", "labels"), t, strict=True)
    }
    fake = SimpleNamespace(
        concatenated_inputs=ORPOTrainer.concatenated_inputs, padding_value=0, is_encoder_decoder=False,
        accelerator=SimpleNamespace(device="cpu"), aux_loss_enabled=False, get_batch_logps=ORPOTrainer.get_batch_logps,
    )  # fmt: skip
    ref = ORPOTrainer.concatenated_forward(fake, plain, batch_)  # TRL's own: full (2B, T, V) logits
    ours = chunked_forward(fake, chunked, batch_)
    losses = {}
    for name, (chosen, rejected, _, _, nll), model in (
        ("plain", ref, plain),
        ("chunked", ours, chunked),
    ):
        loss = orpo_loss(nll, chosen, rejected, lam=0.1)[0].mean()
        losses[name] = (loss, chosen, rejected, nll, trainable_grads(model, loss))
    for i in range(4):
        torch.testing.assert_close(losses["chunked"][i], losses["plain"][i], **TOL)
    for got, want in zip(losses["chunked"][4], losses["plain"][4], strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(("loss_type", "alpha"), [("sigmoid", 1.0), ("simpo", 0.0), ("ipo", 0.5)])
def test_cpo_chunked_forward_equals_trls_logits_path(lora_pair, loss_type, alpha):
    """Summed (sigmoid) or token-mean (simpo, ipo) completion log-probs, and the NLL of the chosen answers."""
    from types import SimpleNamespace

    from trl.experimental.cpo import CPOTrainer

    from oneml.objectives.cpo import chunked_forward

    plain, chunked = lora_pair
    ids, mask, labels = batch()
    rows = {"chosen": (ids[:2], mask[:2], labels[:2]), "rejected": (ids[1:], mask[1:], labels[1:])}
    batch_ = {
        f"{side}_{k}": v
        for side, t in rows.items()
        for k, v in zip(("input_ids", "attention_mask", "labels"), t, strict=True)
    }
    fake = SimpleNamespace(
        concatenated_inputs=CPOTrainer.concatenated_inputs, pad_token_id=0, is_encoder_decoder=False,
        accelerator=SimpleNamespace(device="cpu"), aux_loss_enabled=False, get_batch_logps=CPOTrainer.get_batch_logps,
        loss_type=loss_type, cpo_alpha=alpha,
    )  # fmt: skip
    ref = CPOTrainer.concatenated_forward(fake, plain, batch_)  # TRL's own: full (2B, T, V) logits
    ours = chunked_forward(fake, chunked, batch_)
    losses = {}
    for name, (chosen, rejected, _, _, nll), model in (("plain", ref, plain), ("chunked", ours, chunked)):
        loss = (cpo_loss(chosen, rejected, 0.5, loss_type) + alpha * nll).mean()
        losses[name] = (loss, chosen, rejected, nll, trainable_grads(model, loss))
    for i in range(4):
        torch.testing.assert_close(losses["chunked"][i], losses["plain"][i], **TOL)
    for got, want in zip(losses["chunked"][4], losses["plain"][4], strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_generation_and_plain_forward_untouched(lora_pair):
    plain, chunked = lora_pair
    ids, mask, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(
            chunked(input_ids=ids, attention_mask=mask).logits, plain(ids, attention_mask=mask).logits
        )
        a = plain.generate(input_ids=ids[:1, :5], max_new_tokens=4, do_sample=False)
        b = chunked.generate(input_ids=ids[:1, :5], max_new_tokens=4, do_sample=False)
    assert torch.equal(a, b)


def test_the_head_runs_as_a_module_call_so_its_hooks_fire(lora_pair):
    """FSDP gathers a sharded head weight in a forward pre-hook and reduce-scatters its gradient from hooks set
    in the post-hook; the chunked head must go through them, with the weight the pre-hook put in place."""
    _, chunked = lora_pair
    head = chunked.get_output_embeddings()
    seen = []
    handles = [
        head.register_forward_pre_hook(lambda module, args: seen.append(("pre", args[0].shape[-1]))),
        head.register_forward_hook(lambda module, args, out: seen.append(("post", len(out)))),
    ]
    ids, mask, labels = batch()
    try:
        chunked(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        chunked.zero_grad()
    assert seen == [("pre", head.in_features), ("post", 4)]  # log-probs + three stats, after the pre-hook
    assert "forward" not in head.__dict__  # the head's own forward is back
    assert chunked(input_ids=ids[:1, :5]).logits.shape[-1] == head.out_features


def test_models_that_scale_logits_keep_the_trainers_head():
    model = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    assert unsupported_reason(model) is None
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in unsupported_reason(model)


def test_an_adapted_head_keeps_the_trainers_head():
    base = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert "adapts the LM head" in unsupported_reason(model)
