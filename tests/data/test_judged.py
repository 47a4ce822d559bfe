"""Judged answers: preference pairs in every accepted form (LLaMA-Factory v1 chosen_messages/rejected_messages,
TRL's conversational forms, the shared ShareGPT pairs), unpaired KTO rows, and long pairs truncated the way TRL
truncates them instead of dropped. Every file is derived from the shared dpo_en_demo.json."""

from __future__ import annotations

import json

import pytest

from oneml.config import DataConfig, resolve
from oneml.data import FORMATS, UnpairedExample, detect_format, load_rows, prepare_preference, prepare_unpaired
from oneml.data.pairs import Budget, fit_all
from oneml.errors import OnemlError
from oneml.models.tokenizer import byte_tokenizer

N = 24


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


ROLE = {"human": "user", "gpt": "assistant", "system": "system"}


@pytest.fixture
def demo(shared_data) -> list[tuple[str, str, str]]:
    """The first N single-turn shared pairs as (question, chosen, rejected)."""
    rows = json.loads((shared_data / "dpo_en_demo.json").read_text())
    rows = [r for r in rows if len(r["conversations"]) == 1][:N]
    return [(r["conversations"][0]["value"], r["chosen"]["value"], r["rejected"]["value"]) for r in rows]


def _parts(role: str, text: str, weight: float) -> dict:
    return {"role": role, "content": [{"type": "text", "value": text}], "loss_weight": weight}


def _msg(role: str, text: str) -> dict:
    return {"role": role, "content": text}


def _prompt(row: dict) -> list[dict]:
    return [_msg(ROLE[m["from"]], m["value"]) for m in row["conversations"]]


def _lf_v1(row: dict) -> dict:
    prompt = [_parts(m["role"], m["content"], 0.0) for m in _prompt(row)]
    return {
        "chosen_messages": [*prompt, _parts("assistant", row["chosen"]["value"], 1.0)],
        "rejected_messages": [*prompt, _parts("assistant", row["rejected"]["value"], 1.0)],
    }


FORMS = {
    "llamafactory-v1": _lf_v1,
    "trl-explicit-prompt": lambda r: {
        "prompt": _prompt(r),
        "chosen": [_msg("assistant", r["chosen"]["value"])],
        "rejected": [_msg("assistant", r["rejected"]["value"])],
    },
    "trl-implicit-prompt": lambda r: {
        "chosen": [*_prompt(r), _msg("assistant", r["chosen"]["value"])],
        "rejected": [*_prompt(r), _msg("assistant", r["rejected"]["value"])],
    },
}


def _write(tmp_path, rows, name="rows.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("form", FORMS)
def test_preference_forms_give_the_same_pairs_as_the_shared_file(tmp_path, tok, shared_data, form):
    shared = json.loads((shared_data / "dpo_en_demo.json").read_text())[:N]  # multi-turn prompts among them
    path = _write(tmp_path, [FORMS[form](r) for r in shared])
    assert detect_format(load_rows(DataConfig(dataset=path))[0]) == "preference"
    cfg = {"eval_size": 4, "max_length": 100_000}
    mine = prepare_preference(DataConfig(dataset=path, **cfg), tok)
    reference = prepare_preference(DataConfig(dataset=_write(tmp_path, shared, "shared.jsonl"), **cfg), tok)
    assert mine.stats["train_rows"] == N - 4
    assert mine.train.to_list() == reference.train.to_list() and mine.eval.to_list() == reference.eval.to_list()


def test_chosen_and_rejected_conversations_must_share_their_prompt(tmp_path, tok, shared_data):
    rows = [_lf_v1(r) for r in json.loads((shared_data / "dpo_en_demo.json").read_text())[:N]]
    rows[5]["rejected_messages"][0] = _parts("user", "another question", 0.0)
    with pytest.raises(OnemlError, match=r"row 5 of .*: 'chosen_messages' and 'rejected_messages' differ before"):
        prepare_preference(DataConfig(dataset=_write(tmp_path, rows)), tok)


KTO_FORMS = {
    "messages": lambda q, a, good: {"messages": [_msg("user", q), _msg("assistant", a)], "label": good},
    "prompt-completion": lambda q, a, good: {"prompt": q, "completion": a, "label": good},
    "trl-conversational": lambda q, a, good: {
        "prompt": [_msg("user", q)],
        "completion": [_msg("assistant", a)],
        "label": good,
    },
}


def _kto_rows(demo, form) -> list[dict]:
    """Each shared pair as two unpaired rows: the chosen answer desirable, the rejected one not."""
    return [KTO_FORMS[form](q, a, good) for q, c, r in demo for a, good in ((c, True), (r, False))]


@pytest.mark.parametrize("form", KTO_FORMS)
def test_kto_rows_are_detected_and_prepared_as_unpaired_examples(tmp_path, tok, demo, form):
    path = _write(tmp_path, _kto_rows(demo, form))
    rows = load_rows(DataConfig(dataset=path))
    assert detect_format(rows[0]) == "kto"
    assert FORMATS.get("kto").to_unpaired(rows[1]) == [
        UnpairedExample(prompt=[_msg("user", demo[0][0])], completion=demo[0][2], label=False)
    ]
    data = prepare_unpaired(DataConfig(dataset=path, eval_size=4, max_length=100_000), tok)
    assert data.train.column_names == ["prompt", "completion", "label"]
    assert data.stats["format"] == "kto" and data.stats["train_rows"] == 2 * N - 4
    assert data.stats["desirable"] + data.stats["undesirable"] == 2 * N - 4 and data.stats["truncated"] == 0
    row = data.train[0]
    assert row["prompt"].endswith("<|im_start|>assistant\n") and row["completion"].endswith("<|im_end|>")
    assert isinstance(row["label"], bool)


def test_preference_pairs_unpair_into_kto_examples(tok):
    """Each pair gives two examples, split by pair: the held-out pairs are the ones DPO holds out on the same data,
    side by side (chosen first); no training example shares a prompt with a held-out one."""
    cfg = DataConfig(dataset="dpo-demo", max_samples=40, eval_size=4, max_length=100_000)
    data = prepare_unpaired(cfg, tok)
    assert data.stats["rows"] == 300 and (data.stats["train_rows"], data.stats["eval_rows"]) == (72, 8)
    assert data.stats["desirable"] == data.stats["undesirable"] == 36  # both sides of every training pair
    assert data.eval["label"] == [True, False] * 4
    pairs = prepare_preference(cfg, tok).eval
    assert data.eval["prompt"][::2] == pairs["prompt"] and data.eval["completion"][::2] == pairs["chosen"]
    assert data.eval["completion"][1::2] == pairs["rejected"]
    assert not set(data.train["prompt"]) & set(data.eval["prompt"])
    neighbours = zip(data.train["prompt"], data.train["prompt"][1:], strict=False)
    assert sum(a == b for a, b in neighbours) < 10  # shuffled: TRL's KL term pairs each example with its neighbour


def test_a_kto_label_must_be_a_boolean(tmp_path, tok, demo):
    rows = _kto_rows(demo, "prompt-completion")
    rows[3]["label"] = "yes"
    with pytest.raises(OnemlError, match=r"row 3 of .*: 'label' must be true or false .*, got 'yes' \(format kto\)"):
        prepare_unpaired(DataConfig(dataset=_write(tmp_path, rows), format="kto"), tok)


def test_an_sft_file_is_refused_for_unpaired_data(tmp_path, tok, shared_data):
    cfg = DataConfig(dataset=str(shared_data / "alpaca_en_demo.json"))
    with pytest.raises(OnemlError, match=r"needs answers labelled desirable or not \(label\), or preference pairs"):
        prepare_unpaired(cfg, tok, objective="kto")


# --- truncation ----------------------------------------------------------------------------------------------------


def test_long_dpo_demo_pairs_are_truncated_and_kept(tok, shared_data):
    """At max_length 256 the old rule skipped most of dpo-demo (142 of 300 with SmolLM2's tokenizer, more with
    one token per byte); now every pair is kept, cut so that prompt + answer fits, and the cut ones are counted."""
    path = str(shared_data / "dpo_en_demo.json")
    data = prepare_preference(DataConfig(dataset=path, max_length=256), tok)
    stats = data.stats
    assert stats["train_rows"] + stats["eval_rows"] == 300 and stats["skipped_empty"] == 0
    assert 142 < stats["truncated_pairs"] <= 300
    full = prepare_preference(DataConfig(dataset=path, max_length=100_000), tok)
    prompts, answers = set(full.train["prompt"]) | set(full.eval["prompt"]), set()
    for d in (full.train, full.eval):
        answers |= set(d["chosen"]) | set(d["rejected"])
    for row in [*data.train, *data.eval]:
        assert row["prompt"].endswith("<|im_start|>assistant\n")  # the prompt kept its end
        assert any(p.endswith(row["prompt"]) for p in prompts)
        for side in ("chosen", "rejected"):
            assert len(tok(row["prompt"] + row[side])["input_ids"]) <= 256
            assert row[side] and any(a.startswith(row[side]) for a in answers)  # the answers kept their start


def _xs(n: int) -> str:
    return "x" * n  # n tokens with the byte tokenizer


@pytest.mark.parametrize(
    "prompt, longest, kept_prompt, kept_answer",
    [
        (300, 100, 156, 100),  # long prompt, short answers: the answers whole, the prompt's last 156 tokens
        (20, 400, 20, 236),  # short prompt: its room goes to the answers
        (300, 400, 128, 128),  # both long: the answers get the budget (L // 2), the prompt the rest
        (100, 100, 100, 100),  # fits: untouched
    ],
)
def test_the_truncation_rule(tok, prompt, longest, kept_prompt, kept_answer):
    row = {"prompt": _xs(prompt), "chosen": _xs(longest), "rejected": _xs(longest // 2)}
    (out,), cut = fit_all(tok, [row], ("chosen", "rejected"), Budget(max_length=256, completion=128))
    assert cut == (prompt + longest > 256)
    assert (len(out["prompt"]), len(out["chosen"])) == (kept_prompt, kept_answer)
    assert len(out["rejected"]) == min(longest // 2, kept_answer)


def test_max_completion_length_sets_the_answer_budget(tok, shared_data):
    path = str(shared_data / "dpo_en_demo.json")
    data = prepare_preference(DataConfig(dataset=path, max_samples=30, max_length=256, max_completion_length=64), tok)
    long_prompts = [r for r in data.train if len(tok(r["prompt"])["input_ids"]) >= 256 - 64]
    assert long_prompts and all(len(tok(r["chosen"])["input_ids"]) <= 64 for r in long_prompts)
    with pytest.raises(
        OnemlError, match=r"^data.max_completion_length: must be below data.max_length \(256\), got 256"
    ):
        resolve({"data": {"max_length": 256, "max_completion_length": 256}})
