"""Prepare what the GPU check carries to the GPU machine: the packages its image lacks, the embedded model's
tokenizer and architecture, and the demo data, into the git-ignored folder .gpu-carry/.

    .venv/bin/python benchmarks/gpu_carry.py                 # for the device: CPython 3.12, manylinux x86-64
    .venv/bin/python benchmarks/gpu_carry.py --python 3.11   # a CPU stand-in of the image here (--dry-run checks)

The GPU machine reaches no package index. Its python3 (3.12) holds torch 2.11 (cu130), transformers 5.17,
accelerate 1.15, peft and the scientific stack, but not trl, mlflow, bitsandbytes, pydantic or datasets; and
oneml is tested against transformers 5.25 / peft 0.21 / trl 1.16, whose code paths (TrainingArguments names,
Trainer internals oneml wraps) 5.17 does not have. So the check carries the versions installed here (the tested
set) of every distribution a run imports that the image lacks or holds at another version, installed for the
image's Python into one folder and packed as site.tar.gz (pip --target --no-deps; nothing is resolved there).
Two trims keep it inside the 64 MiB a call may carry, the repository included: bitsandbytes keeps its CUDA 13.0
and CPU libraries only (the image's torch is cu130; the wheel holds one per CUDA version), and mlflow drops its
web UI (the tracking store does not use it).

The embedded SmolLM2-135M's weights (269 MB as safetensors, 98 MB as its GGUF) cannot travel: home.tar.gz holds
its tokenizer and config with the conversion marker, so `model.name=smollm2-135m model.init=random
model.tokenizer=smollm2-135m` builds the real architecture with the real tokenizer and random weights there.
manifest.json lists every file, version and size, and the total that travels with the working tree.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20
"""What one device call may carry: tracked and untracked files plus the carried paths."""
CARRY = (
    # the tested versions of what the image holds at others, with what they need beyond the image
    "transformers", "huggingface_hub", "httpx2", "httpcore2", "truststore", "h11", "anyio", "idna", "click",
    "typer", "rich", "fsspec", "typing_extensions", "peft", "trl",
    # absent from the image
    "datasets", "dill", "multiprocess", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
    "bitsandbytes", "mlflow", "mlflow-skinny", "mlflow-tracing", "SQLAlchemy", "alembic", "Mako", "cachetools",
    "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "opentelemetry-semantic-conventions",
    "sqlparse", "cryptography", "cffi", "pycparser", "fastapi", "starlette", "importlib_metadata",
    "databricks-sdk",  # only for its namespace package: mlflow probes find_spec("databricks.agents") at import
)  # fmt: skip
"""Distributions to carry, at the versions installed here. Found by recording which distributions a train() of
each objective with QLoRA imports (sys.modules -> packages_distributions) and removing those the image holds
(/work/.library/device/KINDS.md lists them) at compatible versions; then checked by a dry run of the GPU check
under an interpreter that sees only the image's distributions (BENCHMARKS.md, "GPU check", says how)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")  # fmt: skip
BNB_KEEP = ("libbitsandbytes_cuda130.so", "libbitsandbytes_cpu.so")
"""bitsandbytes picks its library by torch's CUDA version: the image's torch is cu130."""
TRIM = ("mlflow/server/js",)
"""Folders no run needs: mlflow's web UI (10 MB)."""
EMBEDDED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "chat_template.jinja", ".oneml-complete")  # fmt: skip
DATA_FILES = ("alpaca_en_demo.json", "dpo_en_demo.json")


def pins() -> list[str]:
    return [f"{name}=={md.version(name)}" for name in CARRY]


def install(pinned: list[str], python: str, target: Path) -> None:
    """The wheels for ``python`` (X.Y) on manylinux x86-64, installed into ``target`` without resolving."""
    version = python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile", "--only-binary=:all:",
           "--target", str(target), "--python-version", python, "--implementation", "cp", "--abi", f"cp{version}",
           "--abi", "abi3", "--abi", "none"]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + pinned, check=True)


def trim(site: Path) -> None:
    for lib in (site / "bitsandbytes").glob("libbitsandbytes_*"):
        if lib.name not in BNB_KEEP:
            lib.unlink()
    for folder in TRIM:
        shutil.rmtree(site / folder, ignore_errors=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts pointing at this machine's python


def pack(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for path in sorted(folder.rglob("*")):
            if "__pycache__" not in path.parts:
                tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)


def home_archive(archive: Path) -> None:
    """The embedded model's tokenizer and config (no weights) and the demo data, as $ONEML_HOME holds them."""
    from oneml.models.embedded import PRESET, ensure_embedded
    from oneml.paths import oneml_home

    embedded = ensure_embedded()
    data = _data_folder(oneml_home())
    with tarfile.open(archive, "w:gz", compresslevel=9) as tar:
        for name in EMBEDDED_FILES:
            tar.add(embedded / name, arcname=f"models/{PRESET}/{name}")
        for name in DATA_FILES:
            tar.add(data / name, arcname=f"data/{name}")


def _data_folder(home: Path) -> Path:
    for folder in (home / "data", ROOT.parent / "shared" / "data", ROOT / ".oneml-cache" / "test-home" / "data"):
        if all((folder / name).is_file() for name in DATA_FILES):
            return folder
    raise SystemExit(f"gpu_carry: {', '.join(DATA_FILES)} not found under $ONEML_HOME/data or ../shared/data")


def tree_bytes() -> int:
    """Tracked and untracked-but-not-ignored files: what travels with every device call besides the carry."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
        check=True,
    ).stdout.split(b"\0")  # fmt: skip
    paths = [ROOT / p.decode() for p in listed if p]
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.12", help="the device's Python (X.Y); 3.11 for a CPU stand-in here")
    parser.add_argument("--out", type=Path, default=ROOT / ".gpu-carry", help="the folder to write (git-ignored)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    pinned = pins()
    with tempfile.TemporaryDirectory(prefix="oneml-carry-") as tmp:
        site = Path(tmp) / "site"
        print(f"installing {len(pinned)} distributions for CPython {args.python} (manylinux x86-64)", flush=True)
        install(pinned, args.python, site)
        trim(site)
        pack(site, args.out / "site.tar.gz")
    home_archive(args.out / "home.tar.gz")
    files = {p.name: p.stat().st_size for p in sorted(args.out.iterdir()) if p.is_file() and p.name != "manifest.json"}
    tree = tree_bytes()
    manifest = {"python": args.python, "distributions": pinned, "files": files, "working_tree_bytes": tree}
    manifest["total_bytes"] = tree + sum(files.values())
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    out = io.StringIO()
    for name, size in files.items():
        print(f"  {name:<16}{size / 2**20:8.1f} MiB", file=out)
    print(f"  {'working tree':<16}{tree / 2**20:8.1f} MiB", file=out)
    print(f"  {'total':<16}{manifest['total_bytes'] / 2**20:8.1f} MiB of {LIMIT / 2**20:.0f} MiB", file=out)
    print(out.getvalue(), end="")
    if manifest["total_bytes"] > LIMIT:
        print("gpu_carry: over the device call's 64 MiB; carry less", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
