"""What `oneml methods` and the README's method table show (methods/listing.py): derived from the registry, the counts
are the parameters the methods really train, the listing is sorted by them, and README.md holds the generated table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from methodkit import CTX, tiny

from clikit import run_cli
from oneml.methods import METHODS
from oneml.methods.listing import markdown, rows, trainable, trainable_on

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN, END = "<!-- methods table", "<!-- end of methods table -->"


def test_readme_holds_the_table_the_registry_generates():
    text = README.read_text()
    assert BEGIN in text and END in text, "README.md lost the methods table markers"
    block = text.split(BEGIN, 1)[1].split("-->", 1)[1].split(END, 1)[0]
    assert block.strip() == markdown().strip(), "README.md drifted from the registry: run `oneml methods --markdown`"


def test_every_method_is_listed_once_fewest_parameters_first():
    listed = rows()
    assert sorted(r.name for r in listed) == sorted(METHODS.names())
    known = [r.params for r in listed if r.params is not None]
    assert known == sorted(known)
    refusing = [r.name for r in listed if r.params is None]  # last: they cannot be applied to the embedded default
    assert refusing == ["trainable_tokens"]  # SmolLM2 ties its embeddings
    # Every weight trains in full fine-tuning and in the optimizers that shrink its state instead (GaLore, APOLLO).
    assert {r.name for r in listed if r.params == known[-1]} == {"full", "galore", "apollo"}


@pytest.mark.parametrize(
    ("name", "fields"), [("vera", {}), ("lora", {}), ("shira", {"r": 8}), ("pissa", {}), ("badam", {})]
)
def test_counts_are_what_the_method_trains_on_a_real_model(name, fields):
    """On meta tensors where the init allows it, by depth 1 and 2 where it reads the weights (SHiRA, PiSSA)."""
    cfg = METHODS.get(name)(**fields)
    assert trainable_on(cfg, "tiny-llama") == trainable(cfg.apply(tiny(), CTX))


def test_the_listing_prints_the_counts_in_order_and_the_markdown(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    order = [r.name for r in rows()]
    positions = [re.search(rf"^│ {re.escape(n)} ", out, re.M).start() for n in order]
    assert positions == sorted(positions)
    assert "not trainable: prompt_tuning with orpo" in out and "name: peft, type: <PeftType>" in out
    code, out, _ = run_cli(capsys, "methods", "--markdown")
    assert code == 0 and out == markdown()
