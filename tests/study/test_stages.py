"""Stages (`from:`): a track starts from another track's result. The source is picked on the validation rows (best
configuration, lowest finished seed) and kept once picked; the stage's runs load exactly that run's weights; the
paper's Track 3 is one study; a `from:` that names an unknown track, itself or a cycle is refused at load."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors.torch import load_file
from studykit import ROOT, write_study

from clikit import run_cli
from oneml.errors import OnemlError
from oneml.study import expand, load_study
from oneml.study import stages as stages_module
from oneml.study.expand import PENDING, Known, plan
from oneml.study.run import run_study, study_status
from oneml.study.stages import levels, pick_sources
from oneml.study.state import root_of

SFT = {"base": {"train": {"save_adapter": True}}, "grid": {"method.r": [4, 8]}}
DPO = {"objective": {"name": "dpo"}, "data": {"dataset": "dpo-demo", "max_length": 256}}


def _stage(pick="best", **extra):
    return {"from": {"track": "sft", "pick": pick, **extra}, "base": DPO, "grid": {"objective.beta": [0.1]}}


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tracks, needle",
    [
        (
            {"sft": SFT, "dpo": {"from": {"track": "sfx"}}},
            "tracks.dpo.from.track: unknown track 'sfx'; tracks: dpo, sft",
        ),
        ({"sft": SFT, "dpo": {"from": {"track": "dpo"}}}, "tracks.dpo.from.track: a track cannot start from itself"),
        (
            {"a": {"from": {"track": "b"}}, "b": {"from": {"track": "a"}}},
            "tracks.a.from: a cycle of stages (a -> b -> a)",
        ),
        ({"sft": SFT, "dpo": {"from": {"track": "sft", "pick": "all"}}}, "tracks.dpo.from.pick: must be one of"),
        ({"sft": SFT, "dpo": {"from": {"track": "sft", "metric": "test_loss"}}}, "tracks.dpo.from.metric"),
        (
            {"sft": SFT, "dpo": {"from": {"track": "sft"}, "grid": {"model.adapter": ["x"]}}},
            "tracks.dpo: model.adapter",
        ),
        ({"sft": {"grid": {"method.r": [4]}}, "dpo": _stage()}, "tracks.dpo.from: track sft keeps no model"),
        (
            {"sft": {"base": SFT["base"], "grid": {"method": [{"name": "prefix"}]}}, "dpo": _stage()},
            "tracks.dpo.from: track sft's method prefix cannot be merged",
        ),
        (
            {"dpo": {"base": DPO | SFT["base"]}, "sft": {"from": {"track": "dpo", "metric": "eval_token_accuracy"}}},
            "tracks.sft.from.metric: eval_token_accuracy is not recorded by track dpo",
        ),
    ],
)
def test_bad_from_is_one_line_naming_the_field(tmp_path, tracks, needle):
    with pytest.raises(OnemlError) as err:
        expand(load_study(write_study(tmp_path, tracks=tracks)))
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)


def test_an_unknown_source_track_exits_2_through_the_cli_and_records_nothing(tmp_path, capsys):
    path = write_study(tmp_path, tracks={"sft": SFT, "dpo": {"from": {"track": "sfx"}}})
    code, _, err = run_cli(capsys, "study", "run", str(path))
    assert code == 2 and "tracks.dpo.from.track" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists()


# --- order, placeholders, the paper's Track 3 -------------------------------------------------------------------


def test_levels_run_sources_first():
    spec = load_study(ROOT / "configs" / "studies" / "paper-track3.yaml")
    assert levels(spec) == [["sft"], ["dpo", "orpo"]]


def test_the_papers_track_3_is_one_study():
    spec = load_study(ROOT / "configs" / "studies" / "paper-track3.yaml")
    tuning, finals = plan(spec)
    stage = [t for t in finals if t.track != "sft"]
    assert {t.config.objective.beta for t in stage if t.track == "dpo"} == {0.1, 0.2, 0.5}
    assert {t.config.objective.lambda_ for t in stage if t.track == "orpo"} == {0.1, 0.5, 1.0}
    assert all(t.provisional and t.config.model.adapter == f"{PENDING}sft" for t in stage)
    assert not any(t.provisional for t in finals if t.track == "sft")
    assert {t.track for t in tuning} == {"dpo", "orpo"} and len(tuning) == 6 * 3  # 6 configurations x 3 rates


def test_stages_wait_in_the_status(tmp_path):
    rows = study_status(load_study(write_study(tmp_path, tracks={"sft": SFT, "dpo": _stage("each")})))
    waiting = [r for r in rows if r["state"] == "waiting"]
    assert len(waiting) == 2 * 2 and {r["reason"] for r in waiting} == {"waits for track sft"}  # 2 sources x 2 seeds
    assert {r["grid"]["from"] for r in waiting} == {"sft:r=4", "sft:r=8"}  # pick: each, one stage per source


# --- the pick (no training) -------------------------------------------------------------------------------------

# Validation values per (method.r, seed) of the source track; None = that seed failed.
VALUES = {(4, 0): 2.0, (4, 1): 2.2, (8, 0): 1.9, (8, 1): 2.1}


def _pick(monkeypatch, tmp_path, values, pick="best", metric=None):
    extra = {"metric": metric} if metric else {}
    spec = load_study(write_study(tmp_path, tracks={"sft": SFT, "dpo": _stage(pick, **extra)}))
    sources = [t for t in expand(spec) if t.track == "sft"]
    key = metric or "eval_loss"

    def fake_metrics(trial):
        value = values[trial.config.method.r, trial.seed]
        return {} if value is None else {key: value, "test_" + key.removeprefix("eval_"): -1.0}

    monkeypatch.setattr("oneml.study.tune.selection_metrics", fake_metrics)
    monkeypatch.setattr(
        stages_module, "state", lambda t: "failed" if values[t.config.method.r, t.seed] is None else "finished"
    )
    return spec, sources, pick_sources(spec, "dpo", sources)


def test_best_is_the_best_mean_on_validation_and_its_lowest_seed(monkeypatch, tmp_path):
    spec, sources, (picked,) = _pick(monkeypatch, tmp_path, VALUES)
    best = next(t for t in sources if t.config.method.r == 8 and t.seed == 0)
    assert (picked.run_id, picked.config_id, picked.label) == (best.run_id, best.config.config_id, "sft:r=8")
    lower_seed_failed = VALUES | {(8, 0): None}  # r=8 keeps its mean over what finished but ranks after complete ones
    _, sources, (picked,) = _pick(monkeypatch, tmp_path / "f", lower_seed_failed)
    assert picked.run_id == next(t.run_id for t in sources if t.config.method.r == 4 and t.seed == 0)
    accuracy = {(4, 0): 0.6, (4, 1): 0.6, (8, 0): 0.5, (8, 1): 0.5}  # higher is better: r=4 now
    metric = "eval_token_accuracy"
    _, sources, (picked,) = _pick(monkeypatch, tmp_path / "a", accuracy, metric=metric)
    assert picked.config_id == next(t.config.config_id for t in sources if t.config.method.r == 4)


def test_a_pick_is_kept_when_the_source_results_change(monkeypatch, tmp_path):
    spec, sources, first = _pick(monkeypatch, tmp_path, VALUES)
    swapped = {(4, 0): 1.0, (4, 1): 1.0, (8, 0): 9.0, (8, 1): 9.0}
    _, _, again = _pick(monkeypatch, tmp_path, swapped)
    assert again == first  # the stage's finished runs never lose their starting point
    stage = [t for t in expand(spec, Known(sources={"dpo": again})) if t.track == "dpo"]
    assert {t.config.model.adapter for t in stage} == {first[0].run_id} and not any(t.provisional for t in stage)
    assert stage[0].config.tracking.tags["oneml.from.run"] == first[0].run_id


def test_each_gives_one_stage_per_source_configuration_and_adds_late_finishers(monkeypatch, tmp_path):
    late = VALUES | {(8, 0): None, (8, 1): None}
    _, sources, picked = _pick(monkeypatch, tmp_path, late, pick="each")
    assert [p.label for p in picked] == ["sft:r=4"]
    spec, sources, picked = _pick(monkeypatch, tmp_path, VALUES, pick="each")
    assert [p.label for p in picked] == ["sft:r=4", "sft:r=8"]
    stage = [t for t in expand(spec, Known(sources={"dpo": picked})) if t.track == "dpo"]
    assert len({t.config.config_id for t in stage}) == 2 and len(stage) == 2 * 2
    assert {t.config.tracking.tags["oneml.grid.from"] for t in stage} == {"sft:r=4", "sft:r=8"}


# --- real training: the stage loads the source run's weights -----------------------------------------------------


def test_a_stage_starts_from_the_best_source_run_and_loads_its_weights(tmp_path, monkeypatch):
    from oneml.models import load_model_and_tokenizer

    start = importlib.import_module("oneml.train.start")  # `import a.b.c as x` trips over tests/train/
    real, loaded = start.start_from, []

    def spy(model, spec, *args):
        merged = real(model, spec, *args)
        loaded.append((spec, {k: v.detach().clone() for k, v in merged.state_dict().items()}))
        return merged

    monkeypatch.setattr(start, "start_from", spy)
    spec = load_study(write_study(tmp_path, tracks={"sft": SFT, "dpo": _stage()}))
    result = run_study(spec, progress=False)
    assert set(result.states.values()) == {"finished"} and not result.blocked
    sft = [t for t in result.trials if t.track == "sft"]
    means = {r: sum(_loss(t) for t in sft if t.config.method.r == r) / 2 for r in (4, 8)}
    source = next(t for t in sft if t.config.method.r == min(means, key=means.get) and t.seed == 0)
    stage = [t for t in result.trials if t.track == "dpo"]
    assert len(stage) == 2 and {t.config.model.adapter for t in stage} == {source.run_id}
    assert [spec_ for spec_, _ in loaded] == [source.run_id] * 2

    from mlflow.tracking import MlflowClient

    from oneml.tracking import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(None, tmp_path / "root"))
    for run in client.search_runs(["1"], "tags.`oneml.track` = 'dpo'"):
        assert run.data.params["model.adapter"] == source.run_id and run.data.tags["oneml.from.run"] == source.run_id
        assert run.data.tags["oneml.from.track"] == "sft"
    folder = tmp_path / "root" / "runs" / source.run_id / "model"
    for trial, (_, weights) in zip(stage, loaded, strict=True):  # the base (this seed's) plus the source's B A
        base, _ = load_model_and_tokenizer(trial.config.model, device="cpu", seed=trial.seed)
        _assert_merged(weights, base.state_dict(), folder)
    assert run_study(spec, progress=False).steps_trained == 0  # resume: the same pick, nothing to train

    from oneml.analysis.decision import DecisionOptions
    from oneml.analysis.report import build_report
    from oneml.analysis.results import load_study as load_results

    results = load_results(spec.name, resolve_tracking_uri(None, tmp_path / "root"), artifacts=False)
    label = next(c.label for c in results.configs if c.config_id == source.config.config_id)
    notes = [w for w in build_report(results, DecisionOptions(), figures=False).warnings if "started from" in w]
    assert notes == [
        f"track dpo started from {label} of track sft (its run {source.run_id}), picked on the validation rows"
    ]


def _loss(trial) -> float:
    return json.loads((root_of(trial) / "runs" / trial.run_id / "metrics.json").read_text())["eval_loss"]


def _assert_merged(merged: dict, base: dict, folder) -> None:
    """merged = base + (alpha / r) B A on every LoRA target, read from the source's saved adapter; the rest equal."""
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    adapter = load_file(folder / "adapter_model.safetensors")
    targets = set()
    for key in (k for k in adapter if k.endswith("lora_A.weight")):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        delta = scale * adapter[key.replace("lora_A", "lora_B")] @ adapter[key]
        torch.testing.assert_close(merged[f"{module}.weight"], base[f"{module}.weight"] + delta, atol=1e-6, rtol=0)
        assert delta.abs().max() > 0  # the source trained its adapter
        targets.add(f"{module}.weight")
    assert targets and all(torch.equal(merged[k], base[k]) for k in base if k not in targets)


def test_a_stage_whose_source_never_finished_is_blocked(tmp_path):
    broken = {"base": {"data": {"dataset": "/nonexistent/rows.json"}, "train": {"save_adapter": True}}}
    spec = load_study(write_study(tmp_path, tracks={"sft": broken, "dpo": _stage()}, seeds=[0]))
    result = run_study(spec, progress=False)
    assert result.blocked == ["track dpo: no run of track sft finished to start from"]
    assert [t.track for t in result.trials] == ["sft"] and result.states[result.trials[0].run_id] == "failed"
