#!/usr/bin/env bash
# A stand-in for the air-gapped GPU machine on a connected CPU machine: does the bundle install offline there, and
# does the GPU check's pipeline run on the machine's versions? (Not a GPU run: the tiny sizes on the CPU.)
#
#   benchmarks/gpu_standin.sh [BUNDLE] [VENV]     (from the repository root; BUNDLE default runs/gpu_bundle,
#                                                  written by benchmarks/gpu_wheelhouse.sh; VENV runs/gpu_standin)
#
# 1. VENV: a fresh venv of a Python 3.12 (benchmarks/target_python.sh finds one) holding BUNDLE's
#    expected_on_machine.txt from the package index: the machine's versions where known (torch 2.11, a CUDA
#    build, which runs on the CPU; transformers 5.17), the newest where not. Nothing else: no MMDetection, mmcv,
#    mmengine, faiss or Milvus, as on the machine.
# 2. BUNDLE/install.sh with that venv's Python, offline (--no-index), as on the machine.
# 3. benchmarks/gpu_check.py --cpu-tiny in that venv on BUNDLE's catalog and boxes.
# It prints what each step printed and exits with the first failing step's status.
set -euo pipefail

BUNDLE=${1:-runs/gpu_bundle}
VENV=${2:-runs/gpu_standin}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
die() { echo "gpu_standin: $*" >&2; exit 2; }
[ -f pyproject.toml ] && [ -f benchmarks/gpu_check.py ] || die "run from the repository root"
[ -f "$BUNDLE/expected_on_machine.txt" ] && [ -f "$BUNDLE/install.sh" ] \
    || die "$BUNDLE is no bundle of benchmarks/gpu_wheelhouse.sh (expected_on_machine.txt, install.sh)"
# shellcheck source=benchmarks/target_python.sh
source benchmarks/target_python.sh
python_version_is "${BUILD_PYTHON:-}" "$TARGET_PYTHON" \
    || die "no Python $TARGET_PYTHON found (set BUILD_PYTHON to one): the stand-in's venv must be the machine's version"

echo "== the stand-in: $VENV, Python $TARGET_PYTHON ($BUILD_PYTHON), with what the install takes from the machine"
rm -rf "$VENV"
"$BUILD_PYTHON" -m venv "$VENV"
START=$SECONDS
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$BUNDLE/expected_on_machine.txt"
echo "   the $(wc -l < "$BUNDLE/expected_on_machine.txt") packages the install takes from the machine (and what" \
    "they need) installed from the index in $((SECONDS - START)) s"

echo "== $BUNDLE/install.sh, offline"
START=$SECONDS
PYTHON=$VENV/bin/python bash "$BUNDLE/install.sh" 2>&1 | grep -v -E '^WARNING: Location|Setting accelerator to CPU'
echo "   installed in $((SECONDS - START)) s"

echo "== benchmarks/gpu_check.py --cpu-tiny in the stand-in"
"$VENV/bin/python" benchmarks/gpu_check.py --cpu-tiny --catalog "$BUNDLE/catalog" --boxes "$BUNDLE/boxes.jsonl" \
    --workdir "$VENV/check"
