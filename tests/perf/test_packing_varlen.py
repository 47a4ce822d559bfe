"""Packing for flash-attention kernels: the cumulative lengths the collator emits, the probe at batch > 1, and
packed == padded loss and gradients under flash semantics (a CPU stand-in, varlen_reference.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from varlen_reference import NAME

from oneml.config import ModelConfig
from oneml.data import packing
from oneml.data.packing import PROBE_LENGTHS, REAL_TOKENS, VARLEN_KEYS, PackedCollator, layout, packing_problem
from oneml.models import load_model_and_tokenizer

TOL = dict(rtol=1e-5, atol=1e-6)


def examples(lengths=(11, 5, 6, 8)):
    gen = torch.Generator().manual_seed(1)
    out = []
    for n in lengths:
        ids = torch.randint(3, 250, (n,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [-100] * 2 + ids[2:]})
    return out


@pytest.fixture(scope="module")
def varlen_model():
    """tiny-llama with LoRA, attending as flash kernels do."""
    torch.manual_seed(0)
    base = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))[0]
    base.set_attn_implementation(NAME)
    return get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).train()


@pytest.fixture
def flash_named(monkeypatch):
    """The stand-in counts as a flash kernel (its name cannot say 'flash': transformers would import one)."""
    monkeypatch.setattr(packing, "takes_varlen", lambda model: model.config._attn_implementation in (NAME,))


def test_cumulative_lengths_are_what_transformers_derives_from_the_flattened_position_ids():
    """Flattened row after row, the batch's boundaries are where position ids restart, as transformers reads them
    at batch size 1; each example is one sequence and a row's pad tail another."""
    batch = PackedCollator(pad_token_id=0, varlen=True)(examples())
    # lengths 11, 5, 6, 8 -> rows [11], [8 | a 3-token tail], [6 | 5]
    assert batch["input_ids"].shape == (3, 11)
    assert batch["cu_seq_lens_q"].tolist() == [0, 11, 19, 22, 28, 33]
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(batch["position_ids"].reshape(1, -1))
    assert batch["cu_seq_lens_q"].tolist() == cu_q.tolist() == cu_k.tolist() == batch["cu_seq_lens_k"].tolist()
    assert batch["max_length_q"] == batch["max_length_k"] == int(max_q) == 11
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and isinstance(batch["max_length_q"], int)
    assert not set(VARLEN_KEYS) & set(PackedCollator(pad_token_id=0)(examples()))  # only for flash kernels


def test_probe_packs_several_rows_with_two_examples_and_a_tail():
    rows = layout(PROBE_LENGTHS)
    assert len(rows) > 1 and any(len(row) == 2 for row in rows)
    assert any(sum(PROBE_LENGTHS[i] for i, _ in row) < max(PROBE_LENGTHS) for row in rows)  # a pad tail


def test_flash_semantics_leak_across_examples_without_cumulative_lengths(varlen_model, flash_named, monkeypatch):
    """Without the cumulative lengths a flash kernel runs each packed row as one causal sequence; the probe, at
    batch > 1, sees it and switches packing off. With them it is exact."""
    assert packing_problem(varlen_model) is None
    monkeypatch.setattr(packing, "varlen_kwargs", lambda lengths, width: {})
    reason = packing_problem(varlen_model)
    assert reason is not None and "mixes packed examples" in reason


def test_flash_semantics_are_not_fooled_by_position_ids_at_batch_one(varlen_model, monkeypatch):
    """An implementation not known to take cumulative lengths gets none; flash semantics then ignore the position
    ids and the probe refuses packing (transformers' own batch-1 derivation never applies to our rows)."""
    monkeypatch.setattr(packing, "takes_varlen", lambda model: False)
    assert "mixes packed examples" in (packing_problem(varlen_model) or "")


def test_packed_batch_has_the_padded_loss_and_gradients_under_flash_semantics(varlen_model):
    model = copy.deepcopy(varlen_model)
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples())
    packed = PackedCollator(pad_token_id=0, varlen=True)(examples())
    packed.pop(REAL_TOKENS)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    for batch in (padded, packed):
        out = model(**batch, use_cache=False)
        losses.append(out.loss)
        grads.append(torch.autograd.grad(out.loss, params))
    torch.testing.assert_close(losses[1], losses[0], **TOL)
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, **TOL)
