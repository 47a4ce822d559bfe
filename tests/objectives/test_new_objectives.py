"""KTO, CPO, SimPO, DPO's loss types and the reward model on a tiny model: they learn the polite answer, record their
held-out metrics before and after training in MLflow, and score the same pairs the same way where their definitions
meet (KTO's pairs as DPO's); a reward model scores, exports as a sequence-classification model, is refused by
`oneml eval` and cannot be the start of a causal-LM run, and starts from an SFT run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from clikit import run_cli
from oneml import OnemlError, load_run_config, train
from oneml.config import DataConfig, ModelConfig
from oneml.data import prepare_preference, prepare_unpaired
from oneml.models import load_model_and_tokenizer
from oneml.objectives import OBJECTIVES
from oneml.objectives.preference import PreferenceEvaluator
from oneml.objectives.unpaired import UnpairedEvaluator
from oneml.tracking import list_runs


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Short pairs a tiny model can learn within a few dozen steps: always prefer the polite answer."""
    path = tmp_path_factory.mktemp("pref") / "pairs.jsonl"
    topics = ["tea", "rain", "maps", "cats", "jazz", "bread", "trains", "snow", "ink", "moss", "salt", "wind"]
    rows = [
        {"prompt": f"Tell me about {t}.", "chosen": f"Gladly! {t} is nice.", "rejected": "No. Go away."} for t in topics
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def config(root, data, *extra):
    return load_run_config(
        None,
        [
            "model.name=tiny-llama",
            "method.r=8",
            "method.target_modules=all-linear",
            f"data.dataset={data}",
            "data.eval_size=4",
            "data.max_length=128",
            "train.max_steps=30",
            "train.batch_size=4",
            "train.learning_rate=0.01",
            "train.warmup_ratio=0",
            "train.logging_steps=5",
            f"tracking.root={root}",
            *extra,
        ],
    )


LEARNERS = {
    "kto": ["objective.name=kto", "objective.beta=0.5"],
    "kto-apo": ["objective.name=kto", "objective.loss_type=apo_zero_unpaired", "objective.beta=0.5"],
    "cpo": ["objective.name=cpo", "objective.beta=0.5"],
    "simpo": ["objective.name=simpo"],
    "dpo-ipo": ["objective.name=dpo", "objective.loss_type=ipo", "objective.beta=0.5"],
    "dpo-mpo": ["objective.name=dpo", "objective.loss_type=[sigmoid,sft]", "objective.loss_weights=[1.0,0.5]"],
    "reward": ["objective.name=reward"],
}


@pytest.mark.slow
@pytest.mark.parametrize("objective", LEARNERS.values(), ids=LEARNERS.keys())
def test_the_polite_answer_is_learned_and_recorded(tmp_path, pairs_file, objective):
    result = train(config(tmp_path, pairs_file, *objective), progress=False)
    m = result.metrics
    assert m["eval_reward_margin"] > m["initial_eval_reward_margin"]
    if objective == LEARNERS["cpo"]:
        # CPO's reward sums the answer's log-probs: the polite answer is twice as long, so its summed reward starts
        # far below and still trails after 30 steps (margin -25 -> -10 measured) while every token has been learned.
        assert m["initial_eval_logp_accuracy"] <= 0.75 and m["eval_logp_accuracy"] == 1.0, m
    else:
        assert m["initial_eval_preference_accuracy"] <= 0.75 and m["eval_preference_accuracy"] == 1.0, m
    if "objective.name=kto" in objective:
        assert m["eval_label_accuracy"] > m["initial_eval_label_accuracy"]
        assert m["initial_eval_kl_ref"] == pytest.approx(0.0, abs=1e-6)  # the policy starts at its reference
    (run,) = list_runs(result.tracking_uri)
    assert run["status"] == "FINISHED"
    assert {"eval_loss", "initial_eval_loss", "eval_preference_accuracy", "eval_reward_margin"} <= set(run["metrics"])


def test_kto_scores_the_pairs_among_its_answers_as_dpo_scores_pairs(pairs_file):
    """The same held-out pairs, policy and reference: KTO's pair accuracy and margins are DPO's (same beta)."""
    policy, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), seed=1)
    reference, _ = load_model_and_tokenizer(ModelConfig(name="tiny-llama"), seed=0)
    data = DataConfig(dataset=str(pairs_file), eval_size=6, max_length=256)  # short pairs: none is cut
    trainer = SimpleNamespace(model=policy, ref_model=reference, args=SimpleNamespace(per_device_eval_batch_size=4))
    dpo, kto = OBJECTIVES.get("dpo")(beta=0.3), OBJECTIVES.get("kto")(beta=0.3)
    pairs = PreferenceEvaluator(trainer, prepare_preference(data, tokenizer).eval, tokenizer, 256, dpo)()
    answers = UnpairedEvaluator(trainer, prepare_unpaired(data, tokenizer).eval, tokenizer, 256, kto)()
    assert answers["eval_pairs"] == pairs["eval_pairs"] == 6 and answers["eval_examples"] == 12
    for key in ("preference_accuracy", "reward_margin", "reward_margin_std", "logp_accuracy", "kl_ref"):
        assert answers[f"eval_{key}"] == pytest.approx(pairs[f"eval_{key}"], rel=1e-6), key
    assert 0.0 <= answers["eval_label_accuracy"] <= 1.0 and answers["eval_kto_kl"] >= 0.0


# --- the reward model after training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, pairs_file):
    root = tmp_path_factory.mktemp("reward")
    cfg = config(root, pairs_file, "objective.name=reward", "train.max_steps=2")
    return train(cfg, progress=False), root


def scores(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**batch).logits[:, 0]


def test_a_reward_model_exports_as_a_scoring_model_with_the_trained_scores(tmp_path, capsys, reward_run):
    from transformers import AutoModelForSequenceClassification

    result, root = reward_run
    code, _, err = run_cli(capsys, "export", result.run_id, "--out", str(tmp_path / "out"), "--root", str(root))
    assert code == 0, err
    exported = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    texts = ["Tell me about tea. Gladly!", "No. Go away."]
    torch.testing.assert_close(scores(exported, result.tokenizer, texts), scores(result.model, result.tokenizer, texts))
    assert "AutoModelForSequenceClassification" in (tmp_path / "out" / "README.md").read_text()


def test_oneml_eval_refuses_a_reward_model_in_one_line(capsys, reward_run):
    result, root = reward_run
    code, _, err = run_cli(capsys, "eval", result.run_id, "--root", str(root), "-b", "perplexity")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"RUN: {result.run_id} is a reward model (objective reward)" in err


def test_a_causal_lm_run_cannot_start_from_a_reward_model(reward_run, pairs_file):
    result, root = reward_run
    cfg = config(root, pairs_file, "objective.name=dpo", f"model.adapter={result.run_id}")
    with pytest.raises(OnemlError, match=rf"model.adapter: run {result.run_id} is a reward model"):
        train(cfg, progress=False)


def test_a_reward_model_starts_from_an_sft_run(tmp_path, pairs_file):
    sft = train(config(tmp_path, "alpaca-demo", "data.max_samples=16", "train.max_steps=2"), progress=False)
    cfg = config(tmp_path, pairs_file, "objective.name=reward", f"model.adapter={sft.run_id}", "train.max_steps=1")
    result = train(cfg, progress=False)
    base, _ = load_model_and_tokenizer(cfg.model, seed=cfg.train.seed)
    ids = torch.randint(0, 255, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), result.model.disable_adapter():  # the decoder it started from is the SFT result
        start = result.model.get_base_model().model(ids).last_hidden_state
        assert not torch.allclose(start, base.model(ids).last_hidden_state)


def test_a_kto_run_holds_out_the_prompts_a_dpo_run_holds_out(tmp_path, pairs_file):
    """The generation check (`oneml eval -b eos`) reads a run's held-out prompts: split by pair, KTO's are DPO's."""
    from oneml.eval.bench.eos import held_out_prompts

    kto, dpo = (config(tmp_path, pairs_file, f"objective.name={name}") for name in ("kto", "dpo"))
    assert held_out_prompts(kto, 4) == held_out_prompts(dpo, 4) and len(held_out_prompts(kto, 4)) == 4
