"""Exact versions: requirements.lock (every package but the torch build) and requirements-cuda.lock (torch and its
CUDA runtime) are what `make demo`, `make test` and the Dockerfile install, and nothing else.

No Docker engine runs here, so the image is never built in these tests: the Dockerfile is read instead, and must
install exactly the two locks (hashes required, no dependency resolution), on the Python the lock was resolved
for and the CUDA its torch build uses, under the name the Argo export uses by default."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK, CUDA_LOCK = ROOT / "requirements.lock", ROOT / "requirements-cuda.lock"
CUDA_BUILD = re.compile(r"^(torch|triton|nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+)$")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
MAKEFILE = (ROOT / "Makefile").read_text()


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def locked(path: Path) -> list[tuple[str, str, str, int]]:
    """(name, version, marker, hash count) of each entry of a lock file."""
    out = []
    for entry in re.split(r"\n(?=[A-Za-z0-9])", path.read_text()):
        first = entry.split("\n", 1)[0]
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)\s*(?:;\s*([^\\]*))?", first)
        if match:
            name, version, marker = match.groups()
            out.append((_name(name), version, (marker or "").strip(), entry.count("--hash=sha256:")))
    return out


def applies(marker: str) -> bool:
    return not marker or Marker(marker).evaluate()


def make_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*\??:?=\s*(.+)$", MAKEFILE, re.M)
    assert match, f"Makefile: no {name}"
    return match.group(1).strip()


def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_entry_is_pinned_with_hashes_and_the_torch_build_is_apart():
    main, cuda = locked(LOCK), locked(CUDA_LOCK)
    assert len(main) > 100 and cuda
    assert all(hashes for *_, hashes in main + cuda), "an entry without --hash"
    assert not [name for name, *_ in main if CUDA_BUILD.match(name)]
    assert {name for name, *_ in cuda} <= {name for name, *_ in cuda if CUDA_BUILD.match(name)}
    assert [v for name, v, *_ in cuda if name == "torch"] == [make_variable("TORCH_VERSION")]


def test_the_lock_covers_pyproject():
    """Every dependency of oneml and of the extras the Makefile installs is locked at a version it accepts: a
    dependency added to pyproject.toml without `make lock` fails here."""
    project = PYPROJECT["project"]
    wanted = project["dependencies"] + [
        r for extra in ("dev", "cluster", "eval") for r in project["optional-dependencies"][extra]
    ]
    versions: dict[str, list[str]] = {}
    for name, version, marker, _ in locked(LOCK) + locked(CUDA_LOCK):
        if applies(marker):
            versions.setdefault(name, []).append(version)
    problems = []
    for text in wanted:
        req = Requirement(text)
        have = versions.get(_name(req.name), [])
        if not any(req.specifier.contains(v, prereleases=True) for v in have):
            problems.append(f"{text} (locked: {', '.join(have) or 'no'})")
    assert not problems, f"requirements.lock is behind pyproject.toml, run `make lock`: {problems}"
    locked_python = re.search(r"--python-version (\d+\.\d+)", LOCK.read_text()).group(1)
    assert project["requires-python"] == f">={locked_python}"


def test_the_makefile_installs_exactly_the_lock():
    recipe = re.search(r"^\$\(STAMP\): (.*)\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert recipe and "requirements.lock" in recipe.group(1).split()  # a new lock rebuilds the venv
    installs = [line.strip() for line in recipe.group(2).splitlines() if "pip install" in line]
    assert installs[0].endswith("pip install --quiet --no-deps torch==$(TORCH_VERSION)")  # first: the torch file
    assert "--require-hashes -r requirements.lock" in installs[1]
    assert installs[2].endswith("-e .")
    assert all("--no-deps" in line for line in installs) and len(installs) == 3


def test_the_dockerfile_installs_exactly_the_locks():
    lines = dockerfile()
    args = dict(re.match(r"ARG (\w+)=(\S+)", line).groups() for line in lines if re.match(r"ARG \w+=", line))
    cuda_image = args["CUDA_IMAGE"]
    assert re.match(r"^nvidia/cuda:\d+\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+$", cuda_image)
    runtime = next(v for name, v, *_ in locked(CUDA_LOCK) if name == "nvidia-cuda-runtime")
    assert cuda_image.split(":")[1].split(".")[:2] == runtime.split(".")[:2]  # the CUDA torch was built for
    locked_python = re.search(r"--python-version (\d+\.\d+)", LOCK.read_text()).group(1)
    assert args["PYTHON_VERSION"].rsplit(".", 1)[0] == locked_python
    assert f"uv venv --python ${{PYTHON_VERSION}} {args.get('VIRTUAL_ENV', '/opt/venv')}" in " ".join(lines)
    copied = next(line for line in lines if line.startswith("COPY requirements"))
    assert copied.split()[1:3] == ["requirements-cuda.lock", "requirements.lock"]
    installs = [line for line in lines if re.search(r"\bpip install\b", line)]
    assert len(installs) == 2, installs
    locks, itself = installs
    assert re.search(
        r"uv pip install --no-deps --require-hashes -r \S+/requirements-cuda\.lock -r \S+/requirements\.lock$", locks
    )
    assert re.search(r"uv pip install --no-deps --no-build-isolation /opt/oneml\b", itself)
    assert not re.search(r"\b(pip|uv)\b.*\binstall\b.*\btorch\b", " ".join(lines))  # torch comes from the lock only


def test_the_image_name_is_the_one_argo_uses():
    import oneml
    from oneml.study.argo import IMAGE

    version = PYPROJECT["project"]["version"]
    assert oneml.__version__ == version and IMAGE == f"oneml:{version}"
    assert make_variable("IMAGE") == "oneml:$(VERSION)" and "docker build -t $(IMAGE) ." in MAKEFILE
    assert f"docker build -t {IMAGE} ." in (ROOT / "Dockerfile").read_text()


def test_this_environment_is_the_lock():
    """The venv `make test` built holds every locked package at its locked version (and torch at the pin)."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("not in a virtual environment: nothing was installed from the lock")
    wrong = []
    for name, version, marker, _ in locked(LOCK) + [e for e in locked(CUDA_LOCK) if e[0] == "torch"]:
        if not applies(marker):
            continue
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = "missing"
        if have == "missing" or Version(have).public != Version(version).public:
            wrong.append(f"{name} {have} (locked {version})")
    assert not wrong, f"the venv differs from the lock, run `make venv`: {wrong}"
