"""The judge: reading its answers, both orders, retries with backoff, the request budget, keys and one-line errors."""

from __future__ import annotations

import pytest
from judgekit import Scripted, completion

from oneml.errors import OnemlError
from oneml.eval.judges import Budget, BudgetSpent, Endpoint, JudgeOptions, RequestFailed, resolve_judge
from oneml.eval.pairwise import Pair, judge_pairs, parse_verdict, score_of, tally


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("m", "m"),
        ("M", "M"),
        (" M.\n", "M"),
        ('"m"', "m"),
        ("[[M]]", "M"),
        ("**m**", "m"),
        ("Assistant M is better.", "M"),
        ("tie", "tie"),
        ("Tie: both are equally good", "tie"),
        ("M\nBecause m was too short", "M"),  # the first line decides
        ("Model", None),  # the M of a word is no answer
        ("I'm not sure", None),
        ("m or M", None),  # both identifiers: ambiguous
        ("M, but it is a tie", None),
        ("", None),
        ("The first one", None),
        ("Both have merit", None),  # not a tie: the judge did not say so
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_scores_follow_the_order():
    assert score_of("m", model_first=True) == 1.0 and score_of("m", model_first=False) == 0.0
    assert score_of("M", model_first=True) == 0.0 and score_of("M", model_first=False) == 1.0
    assert score_of("tie", True) == 0.5 and score_of(None, True) is None


class ScriptedJudge:
    """A judge replying from a list (text, or an exception instance), within a budget."""

    kind, name, batch = "scripted", "scripted", 2

    def __init__(self, replies, budget=None):
        self.replies, self.budget, self.seen = list(replies), Budget(budget), []

    def complete(self, batch):
        out = []
        for conv in batch:
            self.seen.append(conv)
            out.append(self.replies.pop(0) if self.budget.take() else BudgetSpent())
        return out


def pairs(n):
    return [Pair([{"role": "user", "content": f"q{i}"}], f"q{i}", f"mine{i}", f"theirs{i}") for i in range(n)]


def test_both_orders_swap_position_and_identifier_and_failures_are_kept():
    ps = pairs(3)
    judge = ScriptedJudge(["m", "M", "m", "m", "M", "I cannot decide"])
    assert judge_pairs(ps, judge, lambda n: None) is None
    # each pair: the model's answer first as "m", then the opponent's first as "m"
    first, second = judge.seen[0][-1]["content"], judge.seen[1][-1]["content"]
    assert first.index("mine0") < first.index("theirs0") and second.index("theirs0") < second.index("mine0")
    assert [p.preference for p in ps] == [1.0, 0.5, None]  # won both; position-biased judge; unreadable
    assert ps[2].status == "parse_failure" and ps[2].judgments[1]["raw"] == "I cannot decide"
    counts = tally(ps)
    assert counts["parse_failures"] == 1 and counts["prompts_judged"] == 2 and counts["draws"] == 1
    assert counts["first_position_chosen"] == pytest.approx(3 / 5)


def test_budget_stops_cleanly_with_what_was_judged():
    ps = pairs(4)
    judge = ScriptedJudge(["m", "M"] * 4, budget=5)
    stopped = judge_pairs(ps, judge, lambda n: None)
    assert "budget (5 requests)" in stopped
    assert [p.status for p in ps] == ["judged", "judged", "not_judged", "not_judged"]
    assert len(ps[2].judgments) == 1  # the fifth request was judged and kept, its pair is incomplete


def test_consecutive_request_failures_stop_the_judging():
    ps = pairs(4)
    judge = ScriptedJudge(["m", "M"] + [RequestFailed("HTTP 400 Bad Request")] * 6)
    stopped = judge_pairs(ps, judge, lambda n: None)
    assert stopped.startswith("3 judge requests in a row failed")
    assert ps[1].status == "request_failure" and ps[1].judgments[0]["error"] == "HTTP 400 Bad Request"


def test_retries_429_and_5xx_with_exponential_backoff_and_counts_every_attempt():
    script = iter([(429, "slow down", {"Retry-After": "3"}), (503, "busy", {}), completion("M")])
    with Scripted(lambda body: next(script)) as server:
        waits = []
        endpoint = Endpoint(server.url, None, timeout_s=5, retries=4, sleep=waits.append)
        budget = Budget(10)
        assert endpoint.chat("judge-x", [{"role": "user", "content": "hi"}], 4, budget) == "M"
        assert waits == [3.0, 2.0]  # Retry-After honoured (above 1 s), then 2**1
        assert budget.used == 3 and len(server.requests) == 3
        assert server.requests[0]["temperature"] == 0 and server.requests[0]["max_tokens"] == 4


def test_retries_end_in_a_failure_and_a_4xx_is_not_retried():
    with Scripted(lambda body: (500, "down", {})) as server:
        waits = []
        endpoint = Endpoint(server.url, None, timeout_s=5, retries=2, sleep=waits.append)
        with pytest.raises(RequestFailed, match="HTTP 500"):
            endpoint.chat("judge-x", [], 4, Budget(None))
        assert waits == [1.0, 2.0] and len(server.requests) == 3
    with Scripted(lambda body: (400, "context too long", {})) as server:
        endpoint = Endpoint(server.url, None, timeout_s=5, retries=5, sleep=lambda s: None)
        with pytest.raises(RequestFailed, match="context too long"):
            endpoint.chat("judge-x", [], 4, Budget(None))
        assert len(server.requests) == 1


def test_budget_counts_retries():
    with Scripted(lambda body: (502, "bad gateway", {})) as server:
        endpoint = Endpoint(server.url, None, timeout_s=5, retries=10, sleep=lambda s: None)
        with pytest.raises(BudgetSpent):
            endpoint.chat("judge-x", [], 4, Budget(3))
        assert len(server.requests) == 3


def test_key_from_the_named_environment_variable(monkeypatch):
    with Scripted(lambda body: completion("m"), key="s3cret") as server:
        monkeypatch.setenv("ONEML_TEST_JUDGE_KEY", "s3cret")
        judge = resolve_judge(JudgeOptions(server.url, key_env="ONEML_TEST_JUDGE_KEY"))
        assert judge.model == "judge-x" and judge.complete([[{"role": "user", "content": "x"}]]) == ["m"]
        monkeypatch.setenv("ONEML_TEST_JUDGE_KEY", "wrong")
        with pytest.raises(OnemlError, match="HTTP 401.*--judge-key-env"):
            resolve_judge(JudgeOptions(server.url, key_env="ONEML_TEST_JUDGE_KEY"))
        monkeypatch.delenv("ONEML_TEST_JUDGE_KEY")
        with pytest.raises(OnemlError, match="--judge-key-env: environment variable ONEML_TEST_JUDGE_KEY is not set"):
            resolve_judge(JudgeOptions(server.url, key_env="ONEML_TEST_JUDGE_KEY"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (JudgeOptions("http://127.0.0.1:9/v1"), "--judge: endpoint http://127.0.0.1:9/v1 is unreachable"),
        (JudgeOptions("tiny-lama"), "--judge: unknown model 'tiny-lama' (did you mean 'tiny-llama'?)"),
        (JudgeOptions("./no/such/dir"), "--judge: directory './no/such/dir' not found"),
        (JudgeOptions("tiny-llama", key_env="X"), "--judge-key-env: only for an endpoint judge"),
        (JudgeOptions("tiny-llama", budget=1), "--judge-budget: one prompt takes two judgments"),
    ],
)
def test_bad_judges_are_one_line(options, message):
    with pytest.raises(OnemlError) as err:
        resolve_judge(options)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_model_the_endpoint_does_not_serve_is_refused():
    with Scripted(lambda body: completion("m"), models=("a", "b")) as server:
        with pytest.raises(OnemlError, match=r"--judge-model: .* does not serve 'c'; it serves a, b"):
            resolve_judge(JudgeOptions(server.url, model="c"))
        assert resolve_judge(JudgeOptions(server.url, model="b")).model == "b"
