"""The generation check on models forced to end (or never end) their turn, and the stop rules of generate."""

from __future__ import annotations

import pytest
import torch

from oneml.config import ModelConfig
from oneml.data.templates import resolve_chat_template
from oneml.eval.bench.eos import StopsAtEos
from oneml.eval.benchmarks import EvalContext, EvalOptions
from oneml.eval.generate import continuation_logprobs, end_of_turn_ids, generate
from oneml.models import load_model_and_tokenizer

PROMPTS = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a colour."}]]


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    template = resolve_chat_template(tokenizer, type("D", (), {"chat_template": None})())
    return model, tokenizer, template


def forced(model, token_id: int, bias: float):
    """A hook on the LM head that adds ``bias`` to one token's logit (always / never that token)."""

    def hook(module, inputs, output):
        output[..., token_id] += bias
        return output

    return model.lm_head.register_forward_hook(hook)


def check(model, tokenizer, template):
    ctx = EvalContext(model, tokenizer, template, end_of_turn_ids(tokenizer, template), None, None,
                      EvalOptions(max_new_tokens=10))  # fmt: skip
    return StopsAtEos().score(ctx, PROMPTS)


def test_end_of_turn_is_found_from_the_template(tiny):
    _, tokenizer, template = tiny
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in end_of_turn_ids(tokenizer, template)


def test_a_model_that_ends_its_turn_scores_1_and_one_that_rambles_0(tiny):
    model, tokenizer, template = tiny
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    handle = forced(model, end, 1e4)
    try:
        good = check(model, tokenizer, template)
    finally:
        handle.remove()
    assert good.metrics["rate"] == 1.0 and good.costs["generation_mean_new_tokens"] == 1.0
    handles = [forced(model, i, -1e4) for i in end_of_turn_ids(tokenizer, template)]
    try:
        bad = check(model, tokenizer, template)
    finally:
        for h in handles:
            h.remove()
    assert bad.metrics["rate"] == 0.0 and bad.costs["generation_mean_new_tokens"] == 10.0
    assert "runs to the 10-token limit" in bad.details["verdict"]


def test_stop_strings_cut_the_text_and_do_not_count_as_stopping(tiny):
    model, tokenizer, template = tiny
    x = tokenizer.convert_tokens_to_ids("x") if "x" in tokenizer.get_vocab() else tokenizer("x")["input_ids"][0]
    handle = forced(model, x, 1e4)  # always "x"
    try:
        out = generate(model, tokenizer, ["hello"], end_ids=[tokenizer.eos_token_id], max_new_tokens=8,
                       stop_strings=("xxx",))  # fmt: skip
    finally:
        handle.remove()
    assert out[0].text == "" and not out[0].stopped and out[0].new_tokens <= 8


def test_continuation_logprobs_equal_a_direct_computation(tiny):
    model, tokenizer, _ = tiny
    context, conts = "Q: sky colour?\nA:", [" blue", " green and red"]
    got = continuation_logprobs(model, tokenizer, context, conts)
    for cont, value in zip(conts, got, strict=True):
        ids = tokenizer(context + cont, add_special_tokens=False)["input_ids"]
        n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
        expected = sum(float(logps[t - 1, ids[t]]) for t in range(n, len(ids)))
        assert value == pytest.approx(expected, abs=1e-4)


def test_token_logprobs_chunked_head_equals_plain_logits_and_leaves_the_model_as_it_was(tiny, monkeypatch):
    import oneml.models.lm_head as chunked
    from oneml.eval.generate import padded, token_logprobs

    model, _, _ = tiny
    rows = [[5, 9, 17, 33, 2], [7, 8, 9]]
    labels = [[-100, -100, 17, 33, 2], [-100, 8, 9]]
    fused = token_logprobs(model, *padded(rows, labels, 0, model))
    assert "forward" not in model.__dict__  # the chunked head was taken off again
    monkeypatch.setattr(chunked, "unsupported_reason", lambda m: "forced: plain logits")
    plain = token_logprobs(model, *padded(rows, labels, 0, model))
    torch.testing.assert_close(fused[0], plain[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(fused[1], plain[1]) and torch.equal(fused[2], plain[2])
    assert int(fused[2].sum()) == 5
