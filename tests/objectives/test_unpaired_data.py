"""The data side of KTO: the objectives for pairs and SFT refuse unpaired rows in one line that points at kto, and
TRL's KTOTrainer trains on what `prepare_unpaired` makes (prompt/completion/label)."""

from __future__ import annotations

import copy
import json

import pytest

from oneml.config import DataConfig, ModelConfig
from oneml.data import prepare_unpaired
from oneml.errors import OnemlError
from oneml.models import load_model_and_tokenizer
from oneml.models.tokenizer import byte_tokenizer
from oneml.objectives import OBJECTIVES


@pytest.fixture
def kto_file(tmp_path, shared_data):
    """The first shared preference pairs as KTO rows: messages + label (chosen desirable, rejected not)."""
    pairs = json.loads((shared_data / "dpo_en_demo.json").read_text())[:8]
    rows = []
    for p in pairs:
        question = {"role": "user", "content": p["conversations"][-1]["value"]}
        for side, label in (("chosen", True), ("rejected", False)):
            rows.append({"messages": [question, {"role": "assistant", "content": p[side]["value"]}], "label": label})
    path = tmp_path / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize(
    "objective, expected",
    [
        (
            "dpo",
            r"^data.dataset: this objective needs paired rows \(chosen/rejected\); .* has unpaired KTO rows \(label\)",
        ),
        ("orpo", r"^data.dataset: this objective needs paired rows \(chosen/rejected\); "),
        ("sft", r"^data.dataset: sft needs conversations that end in an answer; .* unpaired KTO rows \(label\)"),
    ],
)
def test_existing_objectives_refuse_unpaired_rows_with_a_pointer(kto_file, objective, expected):
    with pytest.raises(OnemlError, match=expected) as err:
        OBJECTIVES.get(objective)().prepare(DataConfig(dataset=kto_file), byte_tokenizer())
    assert "\n" not in str(err.value) and "(objective: kto)" in str(err.value)


def test_trl_kto_trainer_trains_on_prepared_unpaired_data(tmp_path, kto_file):
    from trl import KTOConfig, KTOTrainer

    model, tokenizer = load_model_and_tokenizer(ModelConfig(name="tiny-llama"))
    data = prepare_unpaired(DataConfig(dataset=kto_file, eval_size=2, max_length=64, chat_template="chatml"), tokenizer)
    assert data.stats["truncated"] > 0  # the demo answers are longer than 64 tokens: cut, not dropped
    args = KTOConfig(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, max_length=64,
        report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = KTOTrainer(
        model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data.train, processing_class=tokenizer
    )
    assert len(trainer.train_dataset) == len(data.train)  # TRL dropped none: every prompt leaves room to learn
    result = trainer.train()
    assert result.global_step == 2 and result.training_loss == result.training_loss  # not NaN
