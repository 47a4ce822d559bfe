"""The GPU check: everything oneml must get right on a GPU, in one command that fits the GPU machine's lease.

    bash benchmarks/gpu_check.sh                 # on the GPU machine (carry .gpu-carry: benchmarks/gpu_carry.py)
    bash benchmarks/gpu_check.sh --dry-run       # here, on the CPU: the same script with tiny steps

Phases, in order, each a subprocess with its share of the time budget (what one phase leaves, the next may use):

- env: Python, packages and where they come from (the carried folder or the image), each carried distribution's
  requirements checked against what is importable, the GPU (name, memory, native bfloat16, flash-attn).
- tests: the `gpu`-marked tests (tests/gpu and the rest), which skip cleanly without CUDA.
- smoke: every registered method x objective for a few steps through oneml.train() on the embedded model's
  architecture and tokenizer (SmolLM2-135M, random weights: its weights cannot travel), main methods first;
  refused pairs are recorded with their reason, pairs the budget leaves out as not run.
- bench: benchmarks/perf_gpu.py through its CLI (the LM head alone, then oneml vs TRL defaults vs TRL tuned per
  case; or --bench), with a --deadline a minute inside this phase's budget.

Everything lands in $OUT (summary.md, summary.json, pytest.log, smoke.jsonl, smoke.log, bench.json, bench.log:
the device returns at most 8 files); summary.md is printed last.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN_METHODS = ("lora", "qlora", "dora", "pissa")
"""Smoke-tested first: what most users train with."""
SHARES = {"tests": 0.45, "smoke": 0.33, "bench": 0.22}
"""Each phase's share of the budget left after env (unused time passes on to the next phase)."""
DEVICE_MODEL = ["model.name=smollm2-135m", "model.init=random", "model.tokenizer=smollm2-135m"]
DRY_MODEL = DEVICE_MODEL + [
    "model.overrides={num_hidden_layers: 1, hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, "
    "num_key_value_heads: 2, head_dim: 16}"
]
"""The dry run shrinks the architecture to tiny-llama's widths (the test matrix's method settings fit them)."""


@dataclass
class Phase:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    detail: dict = field(default_factory=dict)


# --- phases (each runs in the orchestrator and starts its own subprocess) -----------------------------------------


def run_env(args, budget: float) -> Phase:
    phase = Phase("env")
    proc = _python(["-c", _ENV_PROBE], budget)
    if proc.returncode != 0:
        return _failed(phase, proc)
    phase.detail = json.loads(proc.stdout.strip().splitlines()[-1])
    errors, unmet = phase.detail["import_errors"], phase.detail["requirement_problems"]
    phase.status = f"{len(errors)} import error(s)" if errors else "ok"
    phase.status += f"; {len(unmet)} declared requirement(s) not present (see summary)" if unmet else ""
    return phase


def run_tests(args, budget: float) -> Phase:
    phase = Phase("tests")
    _seed_test_home()
    junit = Path("/tmp/oneml-gpu-junit.xml")
    junit.unlink(missing_ok=True)
    cmd = ["-m", "pytest", "-m", "gpu", "tests/gpu", "tests/models/test_model_loading.py", "tests/perf", "-v", "-rfEs"]
    cmd += ["-p", "no:cacheprovider", f"--junitxml={junit}"]
    if importlib.util.find_spec("pytest_timeout") is not None:  # on the image: one hung test cannot take them all
        cmd += ["--timeout", str(int(max(budget / 3, 60)))]
    log = args.out / "pytest.log"
    proc = _python(cmd, budget, log=log)
    phase.detail = _junit(junit) if junit.is_file() else _verbose_outcomes(log)
    if proc.returncode == 124:
        d = phase.detail
        phase.status = f"timed out after {d['passed']} passed, {d['failed']} failed, {d['skipped']} skipped"
    elif junit.is_file():
        d = phase.detail
        phase.status = f"{d['passed']} passed, {d['failed']} failed, {d['skipped']} skipped"
    else:
        phase.status = f"pytest exited {proc.returncode}"
    return phase


def run_smoke(args, budget: float) -> Phase:
    """``--smoke-workers`` processes at once, each its share of the pairs (interleaved, so the main methods come
    first in every worker): model building and data preparation are CPU work, and the machine has 16 cores."""
    phase = Phase("smoke")
    results = args.out / "smoke.jsonl"
    results.unlink(missing_ok=True)
    deadline = time.time() + budget - 10
    with open(args.out / "smoke.log", "w") as log:
        procs = []
        for shard in range(args.smoke_workers):
            cmd = [str(Path(__file__)), "--smoke-worker", "--out", str(args.out), "--methods", args.methods]
            cmd += ["--deadline", str(deadline), "--shard", f"{shard}/{args.smoke_workers}"]
            cmd += ["--dry-run"] if args.dry_run else []
            threads = str(max(1, (os.cpu_count() or 1) // args.smoke_workers))
            procs.append(_start(cmd, log, env=os.environ | {"OMP_NUM_THREADS": threads}))
        codes = _wait(procs, budget)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    phase.detail = {"counts": counts, "runs": rows, "exit_codes": codes}
    phase.status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no result"
    if any(code != 0 for code in codes):
        phase.status += f" (worker exit codes {codes}{'; 124: time budget' if 124 in codes else ''})"
    return phase


BENCH = ("lm-head", "qwen1.5b", "smollm2", "qlora3b")
"""benchmarks/perf_gpu.py's parts, in its order (the case with the MFU target first); its --deadline stops
starting runs a minute before this phase's budget ends, and its JSON holds every run finished by then."""


def run_bench(args, budget: float) -> Phase:
    phase = Phase("bench")
    names = args.bench or list(BENCH[:2] if args.dry_run else BENCH)
    out = args.out / "bench.json"
    out.unlink(missing_ok=True)
    cmd = ["benchmarks/perf_gpu.py", *[x for n in names for x in ("--only", n)], "--json", str(out)]
    cmd += ["--deadline", str(int(max(budget - 60, 0)))]
    cmd += ["--pairs", str(args.bench_pairs)] if args.bench_pairs else []
    cmd += ["--dry-run"] if args.dry_run else []
    proc = _python(cmd, budget, log=args.out / "bench.log")
    results = json.loads(out.read_text()) if out.is_file() else {}
    phase.detail = {"benchmarks": names, "results": _bench_rows(results)}
    if proc.returncode == 124:
        phase.status = "timed out (partial figures in bench.json and bench.log)"
    elif proc.returncode != 0:
        phase.status = f"perf_gpu.py exited {proc.returncode}: {_tail(proc)}"
    else:
        phase.status = "; ".join(_bench_line(r) for r in phase.detail["results"]) or "no result"
    return phase


PHASES: dict[str, Callable[..., Phase]] = {"env": run_env, "tests": run_tests, "smoke": run_smoke, "bench": run_bench}


# --- the smoke worker (a subprocess of its own: a crash or a hang stops it, not the check) ------------------------


def smoke_worker(args) -> int:
    sys.path.insert(0, str(ROOT / "tests" / "methods"))
    from test_matrix import COPY_REFERENCE, DATASETS, TINY_OVERRIDES  # the test matrix's own settings

    from oneml.methods import METHODS, OBJECTIVE_REFUSALS
    from oneml.objectives import OBJECTIVES

    methods = _method_order(METHODS.names(), args.methods)
    shard, shards = (int(x) for x in args.shard.split("/"))
    pairs = [(m, o) for m in methods for o in OBJECTIVES.names()][shard::shards]
    longest = 0.0
    with open(args.out / "smoke.jsonl", "a") as sink:
        for method, objective in pairs:
            row = {"method": method, "objective": objective}
            if (method, objective) in OBJECTIVE_REFUSALS:
                row |= {"status": "refused", "reason": OBJECTIVE_REFUSALS[(method, objective)]}
            elif time.time() + max(longest, 5.0) > args.deadline:
                row |= {"status": "not run", "reason": "time budget"}
            else:
                kind = OBJECTIVES.get(objective).data_kind
                extra = TINY_OVERRIDES.get(method, []) if args.dry_run or method == "peft" else []
                extra += ["objective.reference=copy"] if objective == "dpo" and method in COPY_REFERENCE else []
                row |= _smoke_run(method, objective, DATASETS[kind], extra, args.dry_run)
                longest = max(longest, row["seconds"])
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(f"{method:>16} x {objective:<5} {row['status']:<9} {row.get('reason', '')}", flush=True)
    return 0


def _smoke_run(method: str, objective: str, dataset: str, extra: list[str], dry: bool) -> dict:
    import gc

    import torch

    from oneml import load_run_config, train

    overrides = (DRY_MODEL if dry else DEVICE_MODEL) + [
        f"method.name={method}", f"objective.name={objective}", f"data.dataset={dataset}", "data.max_samples=16",
        "data.eval_size=4", f"data.max_length={128 if dry else 256}", "train.max_steps=2", "train.batch_size=2",
        "train.warmup_ratio=0", "train.eval_before=false", "train.save_adapter=false",
        f"train.device={'cpu' if dry else 'cuda'}", f"tracking.root=/tmp/oneml-gpu-smoke/{os.getpid()}", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    try:
        result = train(load_run_config(None, overrides), progress=False)
        m = result.metrics
        keep = ("train_loss_mean", "eval_loss", "tokens_per_second", "peak_cuda_mib", "first_step_seconds")
        row = {"status": "passed"} | {k: m[k] for k in keep if k in m} | {"precision": _precision(result)}
    except Exception as err:  # recorded, and the next pair runs
        text = " ".join(str(err).split())[:300]
        row = {"status": "failed", "reason": f"{type(err).__name__}: {text}"}
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row | {"seconds": round(time.perf_counter() - start, 1)}


def _precision(result) -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(result.tracking_uri).get_run(result.mlflow_run_id).data.tags.get("oneml.switch.precision", "")


def _method_order(names: list[str], chosen: str) -> list[str]:
    if chosen == "main":
        return [m for m in MAIN_METHODS if m in names]
    if chosen != "all":
        wanted = [m.strip() for m in chosen.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in names]
        if unknown:
            raise SystemExit(f"--methods: unknown method(s) {unknown}; known: {', '.join(names)}")
        return wanted
    return [m for m in MAIN_METHODS if m in names] + [m for m in names if m not in MAIN_METHODS]


# --- helpers --------------------------------------------------------------------------------------------------------


def _python(cmd: list[str], budget: float, log: Path | None = None) -> subprocess.CompletedProcess:
    """Run the interpreter on ``cmd`` for at most ``budget`` seconds (exit code 124 when it ran out)."""
    if log is not None:
        with open(log, "w") as sink:
            (code,) = _wait([_start(cmd, sink)], budget)
        return subprocess.CompletedProcess(cmd, code, "", "time budget" if code == 124 else "")
    proc = _start(cmd, subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=max(budget, 1))
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.communicate()
        return subprocess.CompletedProcess(cmd, 124, "", "time budget")


def _start(cmd: list[str], sink, env: dict[str, str] | None = None) -> subprocess.Popen:
    err = subprocess.STDOUT if sink is not subprocess.PIPE else subprocess.PIPE
    return subprocess.Popen([sys.executable, *cmd], cwd=ROOT, stdout=sink, stderr=err, text=True, env=env,
                            start_new_session=True)  # fmt: skip


def _wait(procs: list[subprocess.Popen], budget: float) -> list[int]:
    """Wait for every process until ``budget`` seconds have passed; kill what is left (their children too: each
    leads its own process group) and report it as 124."""
    end = time.time() + max(budget, 1)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=max(end - time.time(), 0.1)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            codes.append(124)
    return codes


def _failed(phase: Phase, proc: subprocess.CompletedProcess) -> Phase:
    phase.status = f"failed (exit {proc.returncode}): {_tail(proc)}"
    return phase


def _tail(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][:300] if lines else ""


def _seed_test_home() -> None:
    """The tests read the demo data from .oneml-cache/test-home (tests/conftest.py); the carried home holds it.
    Only missing files are added, and only data: the carried embedded-model folder has no weights, and a test
    home that has the converted model must keep it (a dry run here would otherwise break the local cache)."""
    home = os.environ.get("ONEML_HOME")
    source = Path(home) / "data" if home else None
    if source is None or not source.is_dir():
        return
    target = ROOT / ".oneml-cache" / "test-home" / "data"
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if not (target / file.name).exists():
            shutil.copyfile(file, target / file.name)


def _junit(path: Path) -> dict:
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases, failures = suite.findall("testcase"), []
    for case in cases:
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            message = " ".join((bad.get("message") or "").split())[:300]
            failures.append(f"{case.get('classname')}.{case.get('name')}: {message}")
    skipped = sum(case.find("skipped") is not None for case in cases)
    return {"passed": len(cases) - len(failures) - skipped, "failed": len(failures), "skipped": skipped,
            "failures": failures}  # fmt: skip


def _verbose_outcomes(log: Path) -> dict:
    """The outcomes pytest -v printed before it was stopped (no junit file then)."""
    found = re.findall(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR)", log.read_text(errors="replace"), re.MULTILINE)
    status = [outcome for _, outcome in found]
    failures = [name for name, outcome in found if outcome in ("FAILED", "ERROR")]
    return {"passed": status.count("PASSED"), "failed": len(failures), "skipped": status.count("SKIPPED"),
            "failures": failures}  # fmt: skip


def _bench_rows(results: dict) -> list[dict]:
    """One row per LM head and per case of perf_gpu.py's JSON."""
    rows = [{"benchmark": f"lm-head {r['head']}"} | {k: v for k, v in r.items() if k != "head"}
            for r in results.get("lm_head", [])]  # fmt: skip
    for case in results.get("cases", []):
        row = {"benchmark": case["case"]} | {k: case[k] for k in ("skipped", "weights", "median") if k in case}
        row |= {k: v for k, v in case.items() if k.startswith("oneml/")}
        rows.append(row)
    return rows


def _bench_line(row: dict) -> str:
    if "skipped" in row:
        return f"{row['benchmark']}: skipped ({row['skipped']})"
    if "ms" in row or "error" in row:  # an LM head
        return f"{row['benchmark']}: " + (row.get("error") or f"{row['ms']:.1f} ms, {row['peak_GiB']:.2f} GiB")
    ratios = ", ".join(f"{k} {v['tokens_per_second']:.2f}x" for k, v in row.items() if k.startswith("oneml/"))
    mfu = row.get("median", {}).get("oneml", {}).get("mfu")
    return f"{row['benchmark']}: tokens/s {ratios or 'no pair'}" + (f", oneml MFU {mfu:.2f}" if mfu else "")


# --- the summary ----------------------------------------------------------------------------------------------------


def summary_markdown(phases: list[Phase], args, wall: float) -> str:
    env = next((p.detail for p in phases if p.name == "env"), {})
    lines = [f"# oneml GPU check{' (dry run, CPU)' if args.dry_run else ''}", ""]
    lines += [f"- device: {env.get('gpu', 'none')}; python {env.get('python', '?')}; wall {wall:.0f} s"]
    lines += [f"- {name} {version}" for name, version in env.get("versions", {}).items()]
    lines += ["", "| phase | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {p.name} | {p.status} | {p.seconds:.0f} |" for p in phases]
    for p in phases:
        lines += _phase_notes(p)
    return "\n".join(lines) + "\n"


def _phase_notes(p: Phase) -> list[str]:
    d = p.detail
    if p.name == "env":
        rows = ["", "## import errors", *[f"- {x}" for x in d["import_errors"]]] if d.get("import_errors") else []
        if d.get("requirement_problems"):
            rows += ["", "## declared requirements not present (harmless unless a phase fails importing them)"]
            rows += [f"- {x}" for x in d["requirement_problems"]]
        return rows
    if p.name == "tests" and d.get("failures"):
        return ["", "## failed tests", *[f"- {x}" for x in d["failures"]]]
    if p.name == "smoke" and d.get("runs"):
        rows = ["", "## smoke: method x objective", "", "| method | objective | status | s | tokens/s | peak MiB | "
                "precision | reason |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for r in d["runs"]:
            rows.append(
                f"| {r['method']} | {r['objective']} | {r['status']} | {r.get('seconds', '')} | "
                f"{_num(r.get('tokens_per_second'))} | {_num(r.get('peak_cuda_mib'))} | {r.get('precision', '')} | "
                f"{r.get('reason', '')} |"
            )
        return rows
    if p.name == "bench" and d.get("results"):
        return [
            "",
            "## bench (benchmarks/perf_gpu.py; every figure in bench.json)",
            *[f"- {_bench_line(r)}" for r in d["results"]],
        ]
    return []


def _num(value) -> str:
    return f"{value:,.0f}" if isinstance(value, int | float) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "gpu-check-out")))
    parser.add_argument("--dry-run", action="store_true", help="on the CPU here, tiny steps: does it all start?")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all phases (default 420; dry 1800)")
    parser.add_argument("--phases", default="env,tests,smoke,bench", help="comma-separated, in order")
    parser.add_argument("--methods", default=None, help="all (device default), main (dry default) or a list")
    parser.add_argument("--bench", action="append", help="a benchmarks/perf_gpu.py part (repeatable; default: all)")
    parser.add_argument("--bench-pairs", type=int, default=None, help="alternating pairs per case (default 3)")
    parser.add_argument("--smoke-workers", type=int, default=None, help="smoke processes at once (4; dry run 1)")
    parser.add_argument("--smoke-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = args.methods or ("main" if args.dry_run else "all")
    args.smoke_workers = args.smoke_workers or (1 if args.dry_run else 4)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke_worker:
        return smoke_worker(args)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error(f"--phases: unknown {unknown}; known: {', '.join(PHASES)}")
    return orchestrate(args, phases)


def orchestrate(args, names: list[str]) -> int:
    start = time.time()
    deadline = start + (args.budget or (1800 if args.dry_run else 420))
    phases: list[Phase] = []
    for i, name in enumerate(names):
        left = deadline - time.time()
        later = sum(SHARES.get(n, 0) for n in names[i:]) or 1
        budget = min(left, 60) if name == "env" else left * SHARES.get(name, 0) / later
        t0 = time.perf_counter()
        print(f"== {name} ({budget:.0f} s)", flush=True)
        phase = PHASES[name](args, max(budget, 1))
        phase.seconds = time.perf_counter() - t0
        phases.append(phase)
        print(f"   {phase.status}", flush=True)
    text = summary_markdown(phases, args, time.time() - start)
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps([asdict(p) for p in phases], indent=1, default=str))
    print(text)
    return 0


_ENV_PROBE = r"""
import importlib, importlib.metadata as md, json, os, platform, subprocess, sys
from packaging.requirements import Requirement
site = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
names = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes", "mlflow", "pydantic",
         "huggingface_hub", "tokenizers", "safetensors", "numpy", "pyarrow", "flash_attn"]
versions, where, problems, errors = {}, {}, [], []
for name in names:
    try:
        dist = md.distribution(name)
        versions[name] = dist.version
        where[name] = "carried" if site and str(dist.locate_file("")).startswith(site) else "image"
    except md.PackageNotFoundError:
        versions[name] = "absent"
for dist in md.distributions():
    if not (site and str(dist.locate_file("")).startswith(site)):
        continue
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append(f"{dist.metadata['Name']} needs {req} (absent)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            problems.append(f"{dist.metadata['Name']} needs {req} (have {have})")
for module in ("oneml", "transformers", "peft", "trl", "datasets", "mlflow", "bitsandbytes", "pydantic"):
    try:
        importlib.import_module(module)
    except Exception as err:
        errors.append(f"import {module}: {type(err).__name__}: {err}")
import torch
gpu = "none"
info = {}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    gpu = f"{p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {torch.cuda.device_count()} visible)"
    info = {"bf16_native": torch.cuda.is_bf16_supported(including_emulation=False), "cuda": torch.version.cuda}
try:
    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
except Exception:
    smi = ""
print(json.dumps({"python": platform.python_version(), "executable": sys.executable, "versions": versions,
                  "where": where, "requirement_problems": problems, "import_errors": errors, "gpu": gpu,
                  "cuda": info, "nvidia_smi": smi}))
"""


if __name__ == "__main__":
    sys.exit(main())
