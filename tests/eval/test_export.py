"""`oneml export`: the exported model loads with plain transformers (merged) or plain peft (adapter) and gives
the logits of the trained, adapter-applied model, for LoRA, DoRA, PiSSA and QLoRA runs."""

from __future__ import annotations

import pytest
import torch
from evalkit import tiny_run
from peft import PeftModel
from transformers import AutoModelForCausalLM

from clikit import run_cli
from oneml.eval.trained import open_run
from oneml.models import load_model_and_tokenizer

IDS = torch.randint(0, 255, (2, 24), generator=torch.Generator().manual_seed(3))

METHOD_RUNS = {
    "lora": ["method.name=lora"],
    "dora": ["method.name=dora"],
    "pissa": ["method.name=pissa"],
    "qlora": ["method.name=qlora"],
}
TOLERANCE = {"qlora": 5e-3}  # the 4-bit kernel dequantizes per block on every call; the merged weight once, in fp32


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export-runs")
    return root, {name: tiny_run(root, *extra) for name, extra in METHOD_RUNS.items()}


def trained_logits(root, run_id):
    model, _ = open_run(run_id, root).load("cpu")
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("name", list(METHOD_RUNS))
def test_merged_export_loads_with_plain_transformers_and_matches(runs, name, tmp_path, capsys):
    root, results = runs
    result = results[name]
    out = tmp_path / "merged"
    code, stdout, err = run_cli(capsys, "export", result.run_id, "--out", str(out), "--root", str(root))
    assert code == 0, err
    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in plain.named_parameters())
    assert getattr(plain.config, "quantization_config", None) is None
    with torch.no_grad():
        got = plain(IDS).logits
    tol = TOLERANCE.get(name, 1e-4)
    torch.testing.assert_close(got, trained_logits(root, result.run_id), atol=tol, rtol=tol)
    card = (out / "README.md").read_text()
    assert f"oneml run {result.run_id}" in card and "eval_loss" in card and f"name: {name}" in card


@pytest.mark.parametrize("name", ["lora", "dora", "pissa"])
def test_adapter_export_loads_with_plain_peft_on_the_original_base(runs, name, tmp_path, capsys):
    root, results = runs
    result = results[name]
    out = tmp_path / "adapter"
    code, _, err = run_cli(capsys, "export", result.run_id, "-o", str(out), "--mode", "adapter", "--root", str(root))
    assert code == 0, err
    base, _ = load_model_and_tokenizer(result.config.model, device="cpu", seed=result.config.train.seed)
    model = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        got = model(IDS).logits
    torch.testing.assert_close(got, trained_logits(root, result.run_id), atol=1e-4, rtol=1e-4)


def test_bad_export_requests_are_one_line_and_leave_nothing(runs, tmp_path, capsys):
    root, results = runs
    run_id = results["lora"].run_id
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    for args, message in (
        (["--out", str(busy)], "is not empty"),
        (["--out", str(tmp_path / "x"), "--mode", "gguf"], "--mode: must be one of merged, adapter"),
        (["--out", str(tmp_path / "y"), "--dtype", "int3"], "--dtype"),
    ):
        code, _, err = run_cli(capsys, "export", run_id, "--root", str(root), *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_unwritable_destination_is_one_line(runs, capsys):
    root, results = runs
    code, _, err = run_cli(capsys, "export", results["lora"].run_id, "--out", "/proc/oneml-x", "--root", str(root))
    assert code == 2 and "--out: cannot write in /proc" in err and len(err.strip().splitlines()) == 1
