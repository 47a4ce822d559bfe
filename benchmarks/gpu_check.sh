#!/usr/bin/env bash
# The GPU check in one command (what it checks: benchmarks/gpu_check.py).
#
# On the GPU machine, from the repository root, carrying .gpu-carry (made here by benchmarks/gpu_carry.py):
#     bash benchmarks/gpu_check.sh                      # writes $OUT/summary.md and the logs beside it
# Here, on the CPU, the same script with tiny steps (the .venv's packages; nothing unpacked):
#     bash benchmarks/gpu_check.sh --dry-run
# A CPU stand-in of the image: PY=<an interpreter without the carried packages> USE_SITE=1 CARRY=<a carry built
# with gpu_carry.py --python X.Y for it> bash benchmarks/gpu_check.sh --dry-run
#
# Knobs (environment): OUT (results; default ./gpu-check-out), PY (the interpreter; python3 on the device,
# .venv/bin/python with --dry-run), CARRY (default .gpu-carry), USE_SITE (1: unpack and use the carried packages;
# default 1 on the device, 0 with --dry-run). Every other argument goes to gpu_check.py (--budget, --phases,
# --methods, --bench, --bench-pairs).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
dry=0
for arg in "$@"; do [[ "$arg" == "--dry-run" ]] && dry=1; done
OUT="${OUT:-$PWD/gpu-check-out}"
CARRY="${CARRY:-.gpu-carry}"
if (( dry )); then PY="${PY:-.venv/bin/python}"; USE_SITE="${USE_SITE:-0}"; else PY="${PY:-python3}"; USE_SITE="${USE_SITE:-1}"; fi
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src"
if [[ -f "$CARRY/home.tar.gz" ]]; then
    home=/tmp/oneml-gpu-home
    rm -rf "$home" && mkdir -p "$home" && tar xzf "$CARRY/home.tar.gz" -C "$home" || { echo "gpu_check: cannot unpack $CARRY/home.tar.gz" >&2; exit 2; }
    export ONEML_HOME="$home"
fi
if [[ "$USE_SITE" == 1 ]]; then
    site=/tmp/oneml-gpu/site-packages  # "site-packages" in the path: dill pickles modules from such folders by reference
    [[ -f "$CARRY/site.tar.gz" ]] || { echo "gpu_check: $CARRY/site.tar.gz missing: run benchmarks/gpu_carry.py here and carry $CARRY" >&2; exit 2; }
    rm -rf "$site" && mkdir -p "$site" && tar xzf "$CARRY/site.tar.gz" -C "$site" || { echo "gpu_check: cannot unpack $CARRY/site.tar.gz" >&2; exit 2; }
    export PYTHONPATH="$site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
unset MLFLOW_TRACKING_URI
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
