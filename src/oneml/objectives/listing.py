"""What `oneml objectives` and the README's objective table show, from the registry (a helper, not an objective):
each objective's data, whether it trains against a reference, what it produces, its main keys and the methods it
refuses (`OBJECTIVE_REFUSALS`)."""

from __future__ import annotations

import typing
from dataclasses import dataclass

from oneml.methods import OBJECTIVE_REFUSALS
from oneml.objectives import OBJECTIVES, ObjectiveConfig

DATA = {
    "sft": "conversations (any SFT format)",
    "preference": "preference pairs (prompt, chosen, rejected)",
    "unpaired": "answers labelled desirable or not (label), or preference pairs",
}
"""An objective's data kind -> what the user brings (a new kind fails the listing until it is described here)."""
RESULT = {"lm": "causal LM", "score": "reward model (score head)"}
"""An objective's head -> what its run produces."""


@dataclass(frozen=True)
class Row:
    name: str
    what: str
    data: str
    reference: str
    result: str
    keys: list[str]
    refused: list[str]
    """Methods the libraries cannot train it with (`OBJECTIVE_REFUSALS`)."""


def rows() -> list[Row]:
    """One row per registered objective: SFT, then the ones that train a causal LM on judged answers, then the
    reward model; by name within each."""
    out = []
    for entry in OBJECTIVES.entries():
        cls = entry.value
        refused = sorted(m for m, objective in OBJECTIVE_REFUSALS if objective == entry.name)
        reference = "starting model (`reference`)" if getattr(cls, "needs_reference", False) else "none"
        what = entry.description.split(": ", 1)[-1]
        out.append(Row(entry.name, what, DATA[cls.data_kind], reference, RESULT[cls.head], keys(cls), refused))
    order = {entry.name: (entry.value.data_kind != "sft", entry.value.head != "lm") for entry in OBJECTIVES.entries()}
    return sorted(out, key=lambda r: (*order[r.name], r.name))


def keys(cls: type[ObjectiveConfig]) -> list[str]:
    """Every key but the name, with its choices (a Literal's values, or the objective's `key_choices`)."""
    out = []
    for key, field in cls.model_fields.items():
        if key == "name":
            continue
        shown = field.alias or key
        annotation = field.annotation
        literal = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
        choices = cls.key_choices.get(key, literal)
        out.append(f"{shown}: {' | '.join(map(str, choices))}" if len(choices) > 1 else shown)
    return out


def markdown() -> str:
    """The README's objective table (a test holds README.md to it)."""
    lines = [
        "| `objective.name` | what | data | reference | trains | keys (`oneml keys objective`) | methods refused |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows():
        shown = ", ".join(f"`{k}`".replace("|", "\\|") for k in r.keys) or "-"
        refused = ", ".join(f"`{m}`" for m in r.refused) or "-"
        lines.append(f"| `{r.name}` | {r.what} | {r.data} | {r.reference} | {r.result} | {shown} | {refused} |")
    return "\n".join(lines) + "\n"
