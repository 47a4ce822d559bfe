"""Padding-free packing gives the padded batch's loss and gradients (fp32), and is switched off, with a reason,
where it would not: prompt-learning methods and attention that ignores the packed position ids."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PrefixTuningConfig, get_peft_model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from oneml.config import ModelConfig
from oneml.data.packing import REAL_TOKENS, PackedCollator, pack, packing_problem
from oneml.models import load_model_and_tokenizer
from oneml.models.lm_head import install_chunked_head

TOL = dict(rtol=1e-5, atol=1e-6)


def examples():
    """Three SFT examples of different lengths with prompt tokens masked, as the data layer builds them."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for length, prompt in ((11, 4), (5, 2), (6, 3)):
        ids = torch.randint(3, 250, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)
    base = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).train()


def loss_and_grads(model, batch, fused: bool):
    batch = {**batch, "use_cache": False}  # as TRL's compute_loss passes it: with a cache the block mask is skipped
    out = model(**batch, fused_lm_head=True) if fused else model(**batch)
    params = [p for p in model.parameters() if p.requires_grad]
    return out.loss, torch.autograd.grad(out.loss, params)


@pytest.mark.parametrize("chunked", [False, True])
def test_packed_batch_has_the_padded_loss_and_gradients(lora_model, chunked):
    model = copy.deepcopy(lora_model)
    if chunked:
        install_chunked_head(model)
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples())
    collator = PackedCollator(pad_token_id=0)
    packed = collator(examples())
    # lengths 11, 5, 6 -> rows [11] and [6 | 5]: as wide as the longest example, no padding, no attention mask
    assert packed["input_ids"].shape == (2, 11) and set(packed) == {"input_ids", "labels", "position_ids", REAL_TOKENS}
    assert packed["position_ids"].tolist() == [list(range(11)), list(range(6)) + list(range(5))]
    assert packed.pop(REAL_TOKENS) == 22
    # with a row tail: lengths 11, 8 -> [11], [8 + a 3-token pad segment without labels], 19 real tokens of 22
    tail = collator(examples()[:1] + [{"input_ids": list(range(3, 11)), "labels": list(range(3, 11))}])
    assert tail["position_ids"][1].tolist() == list(range(8)) + [0, 1, 2]
    assert (tail["labels"][1, 8:] == -100).all() and tail[REAL_TOKENS] == 19 < tail["input_ids"].numel()
    loss_padded, grads_padded = loss_and_grads(model, padded, fused=chunked)
    loss_packed, grads_packed = loss_and_grads(model, packed, fused=chunked)
    torch.testing.assert_close(loss_packed, loss_padded, **TOL)
    for got, want in zip(grads_packed, grads_padded, strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_pack_is_first_fit_longest_first_within_capacity():
    assert pack([3, 9, 4, 2, 6], capacity=9) == [[1], [4, 0], [2, 3]]
    assert all(sum([3, 9, 4, 2, 6][i] for i in row) <= 9 for row in pack([3, 9, 4, 2, 6], 9))


def test_packing_without_the_block_mask_would_differ(lora_model, monkeypatch):
    """The equality above rests on transformers building a block mask from the restarting position ids; without
    it (an attention that ignores them) examples attend to each other, which the probe detects."""
    import transformers.masking_utils as masking

    assert packing_problem(lora_model) is None
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    reason = packing_problem(lora_model)
    assert reason is not None and "mixes packed examples" in reason


def test_prompt_learning_is_not_packed():
    base = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    model = get_peft_model(base, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert "prefix_tuning" in packing_problem(model)


def test_train_tokens_count_the_examples_tokens_packed_or_padded(tmp_path):
    """One epoch: train_tokens is the examples' token count, not the packed rows' (their tails are pad) nor the
    padded batches'."""
    import math

    from oneml import load_run_config, train
    from oneml.models import load_model_and_tokenizer

    base = ["model.name=tiny-llama", "data.dataset=alpaca-demo", "data.max_samples=24", "data.eval_size=8"]
    base += ["data.max_length=256", "train.batch_size=4", "train.eval_before=false", f"tracking.root={tmp_path}"]
    cfg = load_run_config(None, base)
    train_set = cfg.objective.prepare(cfg.data, load_model_and_tokenizer(cfg.model)[1]).train
    expected = sum(len(ids) for ids in train_set["input_ids"])
    epoch = [f"train.max_steps={math.ceil(len(train_set) / 4)}"]

    packed = train(load_run_config(None, [*base, *epoch, "data.packing=true"]), progress=False)
    padded = train(load_run_config(None, [*base, *epoch, "data.packing=false"]), progress=False)
    assert packed.config.run_id != padded.config.run_id
    assert packed.metrics["train_tokens"] == padded.metrics["train_tokens"] == expected
