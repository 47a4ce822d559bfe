"""Every kind of bad input the reliability issue names, through the CLI: exit code 2, one line on stderr that names
the field or file, and nothing recorded (no MLflow store, no run folder).

Covered elsewhere too, in depth: config errors (tests/test_config.py), data formats and files
(tests/data/), preference data (tests/objectives/test_preference_runs.py), random inputs (test_properties.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reliakit import TINY, tiny

from clikit import run_cli
from oneml import train


def _jsonl(rows: list) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


GOOD = {"instruction": "Say hi.", "input": "", "output": "Hi!"}
HALF_WEIGHT = {"role": "assistant", "content": "a", "loss_weight": 0.5}  # the SFT loss masks; it cannot weight
# (case id, files to write {name: text, bytes or None for a directory}, extra CLI arguments, expected fragment of
# the error line)
CASES = [
    (
        "malformed YAML",
        {"run.yaml": "train:\n  max_steps: [1,\n"},
        ["{dir}/run.yaml"],
        "run.yaml: line 3, column 1: malformed YAML",
    ),
    ("YAML not a mapping", {"run.yaml": "- a\n- b\n"}, ["{dir}/run.yaml"], "run.yaml: top level must be a mapping"),
    ("config file missing", {}, ["{dir}/nope.yaml"], "nope.yaml: config file not found"),
    (
        "unknown key, nearest suggested",
        {},
        ["--set", "train.max_step=3"],
        "train.max_step: unknown key (did you mean 'max_steps'?)",
    ),
    ("unknown section", {}, ["--set", "trian.max_steps=3"], "trian: unknown key (did you mean 'train'?)"),
    ("wrong type", {}, ["--set", "train.batch_size=four"], "train.batch_size: Input should be a valid integer"),
    ("wrong type, list for a name", {}, ["--set", "method.name=[lora]"], "method.name: must be a name, got ['lora']"),
    ("out of range", {}, ["--set", "method.r=0"], "method.r: must be a positive integer, got 0"),
    (
        "out of range fraction",
        {},
        ["--set", "train.warmup_ratio=1.5"],
        "train.warmup_ratio: Input should be less than 1",
    ),
    (
        "unknown choice",
        {},
        ["--set", "method.name=lorra"],
        "method.name: unknown method 'lorra' (did you mean 'lora'?)",
    ),
    ("bad --set syntax", {}, ["--set", "method.r"], "--set 'method.r': expected key=value"),
    ("dataset file missing", {}, ["--set", "data.dataset={dir}/none.jsonl"], "data.dataset: file not found"),
    (
        "broken JSON line",
        {"d.jsonl": _jsonl([GOOD, GOOD, '{"instruction": "x",', GOOD])},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "d.jsonl line 3: invalid JSON",
    ),
    (
        "binary file as a dataset",
        {"d.jsonl": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x08\x06\x1f\x15\xc4\x89"},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "d.jsonl is not UTF-8 text (byte 0x89 at offset 0)",
    ),
    (
        "dataset in another encoding",
        {"d.json": json.dumps([GOOD | {"output": "Hé!"}] * 4, ensure_ascii=False).encode("cp1252")},
        ["--set", "data.dataset={dir}/d.json"],
        "d.json is not UTF-8 text (byte 0xe9 at offset",
    ),
    ("dataset is a directory", {"d.json": None}, ["--set", "data.dataset={dir}/d.json"], "d.json is a directory"),
    ("dataset file empty", {"d.jsonl": ""}, ["--set", "data.dataset={dir}/d.jsonl"], "d.jsonl is empty (0 bytes)"),
    (
        "non-text message part",
        {"d.jsonl": _jsonl([{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}])},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "row 0 of",
    ),
    (
        "loss weight the loss cannot honour",
        {"d.jsonl": _jsonl([{"messages": [{"role": "user", "content": "q"}, HALF_WEIGHT]}])},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "messages[1].loss_weight must be 0 or 1",
    ),
    (
        "DPO on unpaired KTO rows",
        {"d.jsonl": _jsonl([{"prompt": "q", "completion": "a", "label": True}] * 4)},
        ["--set", "data.dataset={dir}/d.jsonl", "--set", "objective.name=dpo"],
        "needs paired rows (chosen/rejected); ",
    ),
    (
        "unknown DPO loss type, the allowed ones listed",
        {},
        ["--set", "objective.name=dpo", "--set", "objective.loss_type=ipoo"],
        "objective.loss_type: must be one of sigmoid, hinge, ipo, exo_pair,",
    ),
    (
        "DPO loss weights that do not match the loss types",
        {},
        ["--set", "objective.name=dpo", "--set", "objective.loss_type=[ipo,sft]"]
        + ["--set", "objective.loss_weights=[1]"],
        "objective.loss_weights: needs one weight per loss_type (2), got 1",
    ),
    (
        "KTO on SFT data",
        {},
        ["--set", "objective.name=kto", "--set", "data.dataset=alpaca-demo"],
        "data.dataset: kto needs answers labelled desirable or not (label), or preference pairs",
    ),
    (
        "CPO on unpaired KTO rows",
        {"d.jsonl": _jsonl([{"prompt": "q", "completion": "a", "label": True}] * 4)},
        ["--set", "data.dataset={dir}/d.jsonl", "--set", "objective.name=cpo"],
        "(objective: kto)",
    ),
    (
        "KTO with one example per batch",
        {},
        ["--set", "objective.name=kto", "--set", "data.dataset=dpo-demo", "--set", "train.batch_size=1"],
        "train.batch_size: KTO estimates its KL term from the other answers of a batch",
    ),
    (
        "reward model with a method that cannot train its score head",
        {},
        ["--set", "objective.name=reward", "--set", "data.dataset=dpo-demo", "--set", "method={name: bottleneck}"],
        "objective.name: reward cannot train method bottleneck: its adapters are oneml's own modules",
    ),
    (
        "DPO adapter reference for a method without a copyable adapter",
        {},
        ["--set", "objective.name=dpo", "--set", "method={name: full}", "--set", "objective.reference=adapter"],
        "objective.reference: 'adapter' keeps a frozen copy of the method's adapter, and full trains the weights",
    ),
    (
        "SimPO's gamma on CPO's sigmoid loss",
        {},
        ["--set", "objective.name=cpo", "--set", "objective.simpo_gamma=1"],
        "objective.simpo_gamma: only loss_type simpo uses it",
    ),
    (
        "dataset and datasets both",
        {},
        ["--set", "data.dataset=alpaca-demo", "--set", "data.datasets=[{dataset: gsm8k}]"],
        "data.datasets: give data.dataset or data.datasets, not both",
    ),
    (
        "missing field",
        {"d.jsonl": _jsonl([{"instruction": "x"}] * 4)},
        ["--set", "data.dataset={dir}/d.jsonl", "--set", "data.format=alpaca"],
        "has no 'output' field",
    ),
    (
        "empty fields",
        {"d.jsonl": _jsonl([{"instruction": "", "input": "", "output": ""}] * 4)},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "data.dataset: none of the 4 rows",
    ),
    (
        "over-long fields",
        {"d.jsonl": _jsonl([{"instruction": "x " * 400, "input": "", "output": "y"}] * 12)},
        ["--set", "data.dataset={dir}/d.jsonl", "--set", "data.eval_size=2"],
        "data.max_length: no train example",
    ),
    (
        "wrong field type",
        {"d.jsonl": _jsonl([{"instruction": ["x"], "input": "", "output": "y"}] * 4)},
        ["--set", "data.dataset={dir}/d.jsonl"],
        "'instruction' must be text, got list",
    ),
    (
        "too few rows for the held-out split",
        {"d.jsonl": _jsonl([GOOD] * 3)},
        ["--set", "data.dataset={dir}/d.jsonl", "--set", "data.eval_size=3"],
        "data.eval_size: holding out",
    ),
    (
        "test split larger than the data",
        {},
        ["--set", "data.test_size=40"],
        "data.test_size: holding out data.test_size=40 and 8 eval row(s) of 32 usable row(s)",
    ),
    (
        "test and eval splits leave no train rows",
        {},
        ["--set", "data.test_fraction=0.75"],
        "data.test_fraction: holding out data.test_fraction=0.75 (24 test row(s)) and 8 eval row(s) of 32",
    ),
    ("test fraction out of range", {}, ["--set", "data.test_fraction=1.5"], "data.test_fraction: Input should be less"),
    (
        "chat template unknown",
        {},
        ["--set", "data.chat_template=chatlm"],
        "data.chat_template: unknown template 'chatlm'",
    ),
    (
        "target modules match nothing",
        {},
        ["--set", "method.target_modules=[attn]"],
        "method.target_modules: attn match no linear layer of this model",
    ),
    (
        "prefix tuning + gradient checkpointing",
        {},
        ["--set", "method={name: prefix}", "--set", "train.gradient_checkpointing=true"],
        "gradient_checkpointing",
    ),
    ("DPO without pairs", {}, ["--set", "objective.name=dpo"], "has no preference pairs"),
    (
        "unknown model",
        {},
        ["--set", "model.name=tiny-lama"],
        "model.name: unknown model 'tiny-lama' (did you mean 'tiny-llama'?)",
    ),
    (
        "unwritable run root",
        {"root": "a file, not a folder"},
        ["--set", "tracking.root={dir}/root"],
        "tracking.root: cannot write to",
    ),
]


@pytest.mark.parametrize("files, args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_records_nothing(tmp_path, capsys, files, args, expected):
    for name, content in files.items():  # text, bytes (a binary file), or None (a directory)
        path = tmp_path / name
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    root = tmp_path / "runs-root"
    argv = [a.replace("{dir}", str(tmp_path)) for a in args]
    settings = [a for o in TINY for a in ("--set", o)] + ["--set", f"tracking.root={root}"]
    code, out, err = run_cli(capsys, "train", "-q", *settings, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert expected in err, err
    assert not root.exists() or not (root / "mlflow.db").exists() and not any((root / "runs").iterdir())


def test_the_table_covers_every_bad_input_the_issue_names():
    named = {c[0] for c in CASES} | {"chat template missing"}  # its own test below
    issue = {"malformed YAML", "unknown key, nearest suggested", "wrong type", "out of range", "missing field",
             "empty fields", "over-long fields", "broken JSON line", "chat template missing",
             "target modules match nothing", "prefix tuning + gradient checkpointing", "DPO without pairs"}  # fmt: skip
    assert issue <= named


@pytest.mark.slow
def test_pissa_on_a_4bit_base_trains(tmp_path):
    """Not refused: PiSSA's SVD runs on the full-precision weight, then the residual is quantized (methods/lora.py)."""
    cfg = tiny(tmp_path, "method.name=pissa", "method.quantize=nf4", "train.max_steps=2", "train.eval_before=false")
    result = train(cfg, progress=False)
    assert result.metrics["steps"] == 2 and result.metrics["eval_loss"] == result.metrics["eval_loss"]  # not NaN
    assert (Path(result.run_dir) / "metrics.json").is_file()


def test_a_tokenizer_without_chat_template_is_one_line(tmp_path, capsys):
    from oneml.models.loading import load_tokenizer

    folder = tmp_path / "tokenizer"
    load_tokenizer("tiny-llama").save_pretrained(folder)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    root = tmp_path / "runs-root"
    settings = [a for o in TINY for a in ("--set", o)] + ["--set", f"tracking.root={root}"]
    code, _, err = run_cli(capsys, "train", "-q", *settings, "--set", f"model.tokenizer={folder}")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "data.chat_template: the tokenizer of" in err and "has no chat template" in err
    assert not (root / "mlflow.db").exists()
