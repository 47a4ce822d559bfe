"""benchmarks/perf_gpu.py starts and measures what it says without a GPU (--dry-run: the same code paths on CPU
with shrunken models), its FLOP count is the stated formula, and it refuses to pretend without CUDA."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import perf_gpu  # noqa: E402
from perf_gpu_parts import DataShape, Shape, flops_per_token  # noqa: E402


def test_list_and_no_cuda_refusal(capsys):
    assert perf_gpu.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("peak", "lm-head", "smollm2", "qwen1.5b", "qlora3b"))
    if not torch.cuda.is_available():
        assert perf_gpu.main(["--only", "qwen1.5b"]) == 2
        assert "no CUDA device here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        perf_gpu.main(["--only", "qwen-7b"])


def test_flops_per_token_is_the_stated_formula():
    from transformers import AutoConfig

    from oneml.models.catalogue import MODELS

    arch = dict(MODELS.get("qwen2.5-1.5b").arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    shape = Shape.of(config)
    d, q, kv, ff = 1536, 1536, 2 * 128, 8960
    assert shape.body == 28 * (2 * d * q + 2 * d * kv + 3 * d * ff)  # 1.31e9 without embeddings
    assert shape.head == 151_936 * d and shape.attn_width == q
    data = DataShape(labelled_per_token=0.75, square_per_token=295.0)
    lora = flops_per_token(shape, data, full=False)
    assert lora == 4 * shape.body + 4 * shape.head * 0.75 + 6 * 28 * q * 295.0
    assert flops_per_token(shape, data, full=True) - lora == 2 * shape.body + 2 * shape.head * 0.75
    rows = {"input_ids": [[1] * 4, [1] * 2], "labels": [[-100, -100, 5, 6], [-100, 7]]}
    assert DataShape.of(rows) == DataShape(3 / 6, (16 + 4) / 6)


def test_dry_run_of_the_lm_head_compares_every_head_here(tmp_path):
    out = tmp_path / "heads.json"
    assert perf_gpu.main(["--dry-run", "--only", "lm-head", "--json", str(out)]) == 0
    heads = {r["head"]: r for r in json.loads(out.read_text())["lm_head"]}
    assert set(heads) == {"plain", "trl", "ours", "liger", "cce"}
    for name in ("trl", "ours"):  # fp32 on CPU: the same loss and gradient as the plain logits
        assert heads[name]["ms"] > 0 and heads[name]["loss_rel_diff"] < 1e-5 and heads[name]["grad_rel_diff"] < 1e-5
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in heads["liger"]["skipped"] and "needs a CUDA device" in heads["cce"]["skipped"]


@pytest.mark.slow  # three sides, each a real training run of a shrunken SmolLM2 (its real tokenizer) on CPU
def test_dry_run_of_a_case_trains_every_side_and_reports_ratios(tmp_path):
    out = tmp_path / "smollm2.json"
    assert perf_gpu.main(["--dry-run", "--only", "smollm2", "--json", str(out)]) == 0
    (case,) = json.loads(out.read_text())["cases"]
    assert case["weights"].startswith("random (dry run)") and set(case["runs"]) == set(perf_gpu.SIDES)
    runs = {side: rs[0] for side, rs in case["runs"].items()}
    for side, run in runs.items():
        assert "error" not in run, (side, run)
        assert run["tokens_per_second"] > 0 and run["mfu"] > 0
    # the first logged loss is before any update, on the same first batch: every side computes the same number
    assert runs["trl-defaults"]["first_loss"] == pytest.approx(runs["oneml"]["first_loss"], rel=1e-3)
    assert runs["trl-tuned"]["switches"]["padding_free"] == "true"
    assert runs["oneml"]["switches"]["lm_head"] == "ours" and runs["oneml"]["switches"]["packing"] == "true"
    assert case["oneml/trl-defaults"]["pairs"] == case["oneml/trl-tuned"]["pairs"] == 1


def test_a_deadline_stops_new_runs_and_says_so(tmp_path, monkeypatch):
    """What a time limit leaves: every run past the deadline is marked, none is silently missing."""
    ran = []
    monkeypatch.setattr(perf_gpu, "run_side", lambda side, *a: ran.append(side) or {"error": "x", "wall_seconds": 0})
    monkeypatch.setattr(perf_gpu, "_model", lambda *a: type("M", (), {"path": ROOT, "weights": "real"})())
    settings = perf_gpu.Settings("cpu", 1, 2, 2, 256, True, [], deadline=0.0)
    import perf_gpu_parts

    monkeypatch.setattr(perf_gpu_parts, "flops_per_token", lambda *a, **k: 1.0)
    monkeypatch.setattr(perf_gpu_parts.Shape, "of", classmethod(lambda cls, c: None))
    monkeypatch.setattr(perf_gpu_parts.DataShape, "of", classmethod(lambda cls, r: None))
    monkeypatch.setattr("transformers.AutoConfig.from_pretrained", lambda p: None)
    result = perf_gpu.run_case("smollm2", settings, None, type("R", (), {"train": None})(), 1.0, started=-1.0)
    assert ran == [] and all(r[0]["error"].startswith("not run: past the --deadline") for r in result["runs"].values())
