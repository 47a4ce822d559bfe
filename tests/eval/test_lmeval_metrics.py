"""lm-eval's result keys become our metric names, with the direction lm-eval gives them."""

from __future__ import annotations

from oneml.eval.lmeval import split_metrics
from oneml.eval.run import metric_names


def test_scores_lower_metrics_and_stderr_are_separated():
    results = {"toy": {"alias": "toy", "acc,none": 0.75, "acc_stderr,none": 0.1, "perplexity,none": 3.5}}
    higher = {"toy": {"acc": True, "perplexity": False}}
    r = split_metrics(results, higher, {"toy": {"effective": 4}})
    assert r.metrics == {"acc": 0.75} and r.lower == {"perplexity": 3.5}
    assert r.details["acc_stderr"] == 0.1
    names = metric_names("lm-eval:toy", r)
    assert names == {"bench/lm-eval/toy/acc": 0.75, "bench-lower/lm-eval/toy/perplexity": 3.5}


def test_groups_of_tasks_keep_the_task_in_the_name():
    results = {"a": {"acc,none": 0.5}, "b": {"acc,strict": 0.25}}
    r = split_metrics(results, {}, {})
    assert r.metrics == {"a/acc": 0.5, "b/acc": 0.25}
