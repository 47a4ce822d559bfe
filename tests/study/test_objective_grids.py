"""The objectives as study values: a grid over `objective.name` or DPO's `objective.loss_type`, and stages from an SFT
track into KTO and CPO; a loss type left at its default keeps the run id it had before the key existed."""

from __future__ import annotations

import pytest
from studykit import write_study

from oneml.study import expand, load_study
from oneml.study.expand import PENDING
from oneml.study.run import run_study
from runidkit import id_before

PAIRS = {"dataset": "dpo-demo", "max_samples": 24, "max_length": 96}
TRACKS = {
    "sft": {"base": {"train": {"save_adapter": True}}, "grid": {"method.r": [4]}},
    "judged": {"from": {"track": "sft"}, "base": {"data": PAIRS}, "grid": {"objective.name": ["kto", "cpo"]}},
    "dpo": {"base": {"objective": {"name": "dpo"}, "data": PAIRS}, "grid": {"objective.loss_type": ["sigmoid", "ipo"]}},
}


def study(tmp_path):
    return load_study(write_study(tmp_path, tracks=TRACKS, seeds=[0], budget={"max_steps": 2}))


def test_objectives_and_loss_types_are_grid_values_and_stages(tmp_path):
    trials = expand(study(tmp_path))
    judged = [t for t in trials if t.track == "judged"]
    assert sorted(t.config.objective.name for t in judged) == ["cpo", "kto"]
    assert all(t.config.model.adapter == f"{PENDING}sft" for t in judged)  # they start from the SFT track's pick
    kto = next(t for t in judged if t.config.objective.name == "kto")
    assert kto.config.objective.reference == "adapter"  # auto, resolved for the method (LoRA)
    dpo = {t.config.objective.loss_type: t for t in trials if t.track == "dpo"}
    assert set(dpo) == {"sigmoid", "ipo"} and dpo["sigmoid"].run_id != dpo["ipo"].run_id
    # The default loss type is not hashed: the run id is the hash of the config as it was before the key existed.
    assert dpo["sigmoid"].run_id == id_before(dpo["sigmoid"].config)


@pytest.mark.slow
def test_the_study_runs_sft_then_kto_and_cpo_and_both_loss_types(tmp_path):
    spec = study(tmp_path)
    result = run_study(spec, progress=False)
    assert set(result.states.values()) == {"finished"} and len(result.states) == 5, result.states
    sft = next(t for t in result.trials if t.track == "sft")
    judged = [t for t in result.trials if t.track == "judged"]
    assert {t.config.model.adapter for t in judged} == {sft.run_id}  # resolved to the SFT run once it finished
