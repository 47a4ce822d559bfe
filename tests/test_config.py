"""Config: defaults, YAML + dotted overrides, one-line errors naming the field, stable run ids."""

from __future__ import annotations

import pytest

from oneml import LoRAConfig, OnemlError, RunConfig
from oneml.config import apply_overrides, load_run_config
from oneml.methods import METHODS
from runidkit import id_before


def test_seed_api_lora_config():
    cfg = LoRAConfig(r=16, alpha=32, dropout=0.1, target_modules=["q_proj", "v_proj"])
    peft_cfg = cfg.peft_config()
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (16, 32, 0.1)
    assert set(peft_cfg.target_modules) == {"q_proj", "v_proj"}
    assert RunConfig(method=cfg).method is cfg


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: {name: tiny-llama}\nmethod: {name: lora, r: 4}\ntrain: {max_steps: 7}\n")
    cfg = load_run_config(path, ["method.alpha=8", "method.target_modules=[q_proj, k_proj]", "data.eval_size=3"])
    assert cfg.model.name == "tiny-llama"
    assert (cfg.method.r, cfg.method.alpha, cfg.method.target_modules) == (4, 8.0, ["q_proj", "k_proj"])
    assert cfg.train.max_steps == 7 and cfg.data.eval_size == 3


def test_override_on_missing_method_section_keeps_default_method():
    cfg = load_run_config(None, ["method.r=8"])
    assert cfg.method.name == "lora" and cfg.method.r == 8


def test_method_by_name_string():
    assert load_run_config(None, ["method=full"]).method.name == "full"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.r=0"], "method.r: must be a positive integer, got 0"),
        (["method.r=-3"], "method.r: must be a positive integer, got -3"),
        (["method.rr=3"], "method.rr: unknown key (did you mean 'r'?)"),
        (["method.name=lorra"], "method.name: unknown method 'lorra' (did you mean 'lora'?)"),
        (["trian.max_steps=1"], "trian: unknown key (did you mean 'train'?)"),
        (["train.max_steps=0"], "train.max_steps: must be a positive integer, got 0"),
        (["train.learning_rate=-1"], "train.learning_rate: must be a positive number, got -1"),  # a float field
        (["train.learning_rate=0"], "train.learning_rate: must be a positive number, got 0"),
        (["data.format=xml"], "data.format: must be one of 'auto', 'alpaca'"),
        (["data.eval_fraction=1.5"], "data.eval_fraction:"),
        (["method.dropout=abc"], "method.dropout:"),
        (["method.target_modules=[]"], "method.target_modules: must name at least one module"),
        (["train.device=tpu"], "train.device: must be one of 'auto', 'cpu' or 'cuda'"),
        (["oops"], "--set 'oops': expected key=value"),
    ],
)
def test_errors_are_one_line_naming_the_field(overrides, message):
    with pytest.raises(OnemlError) as info:
        load_run_config(None, overrides)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(OnemlError, match="config file not found"):
        load_run_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: {name: lora\ntrain: [\n")
    with pytest.raises(OnemlError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_run_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(OnemlError, match="top level must be a mapping"):
        load_run_config(scalar)


def test_run_id_is_a_hash_of_config_and_seed_not_tracking():
    base = load_run_config(None, [])
    assert base.run_id == load_run_config(None, []).run_id
    assert base.run_id != load_run_config(None, ["train.seed=1"]).run_id
    assert base.run_id != load_run_config(None, ["method.r=8"]).run_id
    assert base.run_id == load_run_config(None, ["tracking.root=/tmp/elsewhere"]).run_id


@pytest.mark.parametrize("method", ["lora", "qlora", "dora", "pissa", "sorsa", "loraplus"])
def test_the_lora_familys_later_keys_at_their_default_leave_run_ids_as_they_were(method):
    cfg = load_run_config(None, [f"method.name={method}", "method.r=4"])
    assert cfg.run_id == id_before(cfg)  # the id the config had before them
    explicit = load_run_config(None, [f"method.name={method}", "method.r=4", "method.calibration_batches=8"])
    assert explicit.run_id == cfg.run_id  # a default written out is the same experiment
    for change in ("method.lora_bias=true", "method.layers_to_transform=[0]", "method.rank_pattern={q_proj: 8}"):
        if method in ("pissa", "sorsa", "dora") and "lora_bias" in change:
            continue  # refused with their init or DoRA (test_lora_inits)
        changed = load_run_config(None, [f"method.name={method}", "method.r=4", change])
        assert changed.run_id != cfg.run_id, change


def test_an_unset_test_split_leaves_run_ids_as_they_were():
    """Run ids recorded before data.test_size/test_fraction existed stay valid: while unset they are not hashed."""

    cfg = load_run_config(None, ["method.r=4", "data.eval_size=8"])
    assert cfg.run_id == id_before(cfg)  # the hash of the config without them (unset, or at their defaults)
    with_test = load_run_config(None, ["method.r=4", "data.eval_size=8", "data.test_size=8"])
    assert with_test.run_id != cfg.run_id and with_test.config_id != cfg.config_id
    assert (
        with_test.run_id != load_run_config(None, ["method.r=4", "data.eval_size=8", "data.test_fraction=0.1"]).run_id
    )
    stopping = ["method.r=4", "data.eval_size=8", "train.early_stopping={patience: 2}"]
    with_stop = load_run_config(None, [*stopping, "train.eval_steps=4"])
    assert with_stop.run_id != load_run_config(None, ["method.r=4", "data.eval_size=8", "train.eval_steps=4"]).run_id


DEFAULT_SPEED_KEYS = [
    ("model", "attn_implementation", "auto"),
    ("train", "kernels", "none"),
    ("train", "optim", "auto"),
    ("train", "tf32", False),
]


def test_speed_keys_at_their_defaults_leave_run_ids_as_they_were():
    """Configs written before the speed keys existed keep their run ids (the hashes below were computed before
    them, at bf4ed11); spelling a default out keeps it too, and any other value is a different run."""
    before = {(): "8bf6f9e90e75", ("train.chunked_loss=false", "train.compile=true"): "532efee96bad"}
    for overrides, run_id in before.items():
        assert load_run_config(None, list(overrides)).run_id == run_id
    spelled = ["model.attn_implementation=auto", "train.kernels=none", "train.optim=auto", "train.tf32=false"]
    assert load_run_config(None, [*spelled, "train.chunked_loss=auto", "train.compile=off"]).run_id == before[()]
    assert load_run_config(None, ["train.chunked_loss=off", "train.compile=full"]).run_id == "532efee96bad"
    others = ["model.attn_implementation=sdpa", "train.optim=adamw_torch", "train.tf32=true", "train.compile=regional"]
    others += ["train.chunked_loss=ours", "train.chunked_loss=liger", "train.kernels=liger"]
    ids = {load_run_config(None, [o]).run_id for o in others}
    assert len(ids) == len(others) and before[()] not in ids


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.chunked_loss=fast", "train.chunked_loss: must be one of auto, off, ours, trl, liger, cce"),
        ("train.compile=max", "train.compile: must be false, true (= full) or regional, got 'max'"),
        ("model.attn_implementation=flash", "model.attn_implementation: must be one of auto, eager, sdpa"),
        ("train.optim=sgd", "train.optim: must be one of 'auto', 'adamw_torch'"),
        ("train.kernels=unsloth", "train.kernels: must be one of 'none' or 'liger'"),
    ],
)
def test_bad_speed_values_are_one_line_errors(override, message):
    with pytest.raises(OnemlError) as err:
        load_run_config(None, [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_test_split_keys_are_documented():
    from oneml.config import DataConfig
    from oneml.schema import describe_keys

    keys = {key: doc for key, _, _, doc in describe_keys(DataConfig, "data.")}
    assert "test split" in keys["data.test_size"] and "test split" in keys["data.test_fraction"]
    assert "eval_*" in keys["data.test_fraction"]


def test_overrides_do_not_mutate_input():
    data = {"method": {"name": "lora", "r": 4}}
    apply_overrides(data, ["method.r=8"])
    assert data["method"]["r"] == 4


def test_every_registered_method_has_defaults_and_description():
    for entry in METHODS.entries():
        assert entry.description
        assert entry.value().name == entry.name


def test_config_round_trips_through_dict():
    cfg = load_run_config(None, ["method.r=4", "train.seed=3"])
    again = RunConfig.model_validate(cfg.to_dict())
    assert again == cfg and again.run_id == cfg.run_id


def test_every_objective_round_trips_through_its_dict():
    """A run's record (config.yaml) read back gives the same config and run id, whatever the objective."""
    from oneml.objectives import OBJECTIVES

    for name in OBJECTIVES.names():
        cfg = load_run_config(None, [f"objective.name={name}"])
        again = RunConfig.model_validate(cfg.to_dict())
        assert again == cfg and again.run_id == cfg.run_id, name
