#!/usr/bin/env bash
# What an air-gapped GPU machine needs to run benchmarks/gpu_check.py, prepared on a connected machine.
#
#   benchmarks/gpu_wheelhouse.sh [OUT] [GPU_FREEZE]        (from the repository root; OUT default runs/gpu_bundle)
#
# OUT gets:
#   wheels/        the wheels the GPU machine lacks, for CPython 3.12 on manylinux x86_64: ms-swift 4.6.0, DeepSpeed
#                  (an sdist on PyPI: built here with `pip wheel --no-deps`), ModelScope, their dependencies, and
#                  hatchling for the editable install of this checkout (the working tree travels anyway). Not torch,
#                  nor what the machine already has: the packages of GPU_FREEZE (`pip freeze` run there, carried
#                  here as text), or, without it, what resolving the machine's stated packages gives (torch 2.11,
#                  transformers 5.17, peft, accelerate, sentence-transformers, timm and their dependencies, for
#                  that platform): an estimate, printed as such. No MMDetection / mmcv / mmengine, faiss or
#                  Milvus: the check's training and encoding path does not import them
#                  (tests/benchmarks/test_gpu_check.py runs it with them unimportable).
#   catalog/       the first PRODUCTS (default 1000) products of the dev catalog (products.csv + images/, copies)
#   boxes.jsonl    their core-product boxes (`moon-swift detect`, the bundled detector, here on the CPU)
#   install.sh     run on the GPU machine from the repository root: offline install of wheels/ + this checkout
#   sizes.txt      each wheel's size; the total is printed against the 64 MiB that may travel with the tree
#
# Environment: PYTHON (default .venv/bin/python: a Python with this project installed, torch included, for the
# DeepSpeed build and `moon-swift detect`), BUILD_PYTHON (default: python3.12 on PATH, else pyenv's 3.12; it builds
# the wheels of other sdists, linux_x86_64 wheels where they have C code), PRODUCTS, CATALOG (default
# ../shared/data/fashion-catalog-dev), TARGET_PYTHON (3.12), TARGET_PLATFORM (the manylinux tags of glibc 2.28),
# GPU_TORCH (2.11.*), GPU_TRANSFORMERS (5.17.*).
set -euo pipefail

OUT=${1:-runs/gpu_bundle}
GPU_FREEZE=${2:-}
PYTHON=${PYTHON:-.venv/bin/python}
PRODUCTS=${PRODUCTS:-1000}
CATALOG=${CATALOG:-../shared/data/fashion-catalog-dev}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
# torch 2.11 and its CUDA 13 libraries are manylinux_2_18 .. 2_28 wheels: a manylinux2014 (glibc 2.17) tag alone
# excludes them, and pip does not widen an explicit --platform, so every tag of a glibc 2.28 machine is given
TARGET_PLATFORM=${TARGET_PLATFORM:-$(for n in $(seq 28 -1 5); do printf 'manylinux_2_%s_x86_64 ' "$n"; done; echo \
    manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64 linux_x86_64)}
GPU_TORCH=${GPU_TORCH:-2.11.*}
GPU_TRANSFORMERS=${GPU_TRANSFORMERS:-5.17.*}
# sdists with C code (crcmod, ...) must be built by the target's Python version: the first python3.12 on PATH that
# runs, else pyenv's newest 3.12 (its shim fails while another version is selected), else PYTHON (a C sdist then
# stops the script, naming BUILD_PYTHON)
if [ -z "${BUILD_PYTHON:-}" ]; then
    for candidate in "$(command -v "python$TARGET_PYTHON" || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$TARGET_PYTHON".*/bin/python"$TARGET_PYTHON" 2> /dev/null \
            | sort -V -r) "$PYTHON"; do
        if [ -n "$candidate" ] && "$candidate" -c '' 2> /dev/null; then BUILD_PYTHON=$candidate; break; fi
    done
fi
LIMIT_MIB=64

die() { echo "gpu_wheelhouse: $*" >&2; exit 2; }
[ -f pyproject.toml ] && [ -f benchmarks/gpu_check.py ] || die "run from the repository root"
[ -x "$PYTHON" ] || die "PYTHON=$PYTHON is not an executable Python (set PYTHON)"
[ -f "$CATALOG/products.csv" ] || die "CATALOG=$CATALOG has no products.csv (a fashion catalog: products.csv + images/)"
[ -z "$GPU_FREEZE" ] || [ -f "$GPU_FREEZE" ] || die "GPU_FREEZE: no file $GPU_FREEZE (pip freeze of the GPU machine)"
MOON_SWIFT=$(dirname "$PYTHON")/moon-swift
[ -x "$MOON_SWIFT" ] || die "no moon-swift beside $PYTHON: install this project into that environment"

rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/work"
WORK=$OUT/work
PIP=("$PYTHON" -m pip --disable-pip-version-check)
TARGET=(--python-version "$TARGET_PYTHON" --only-binary=:all: --implementation cp)
for tag in $TARGET_PLATFORM; do TARGET+=(--platform "$tag"); done

# Versions as they are here, where the test suite passes
version_of() { "$PYTHON" -c "from importlib.metadata import version; print(version('$1'))"; }
DEEPSPEED=$(version_of deepspeed)
MODELSCOPE=$(version_of modelscope)
# What the GPU machine needs on top of what it has; this checkout is installed with --no-deps (its pyproject also
# names MMDetection, mmcv, faiss and Milvus, which the check does not use), so its imports on the check's path are
# listed here: pillow, numpy, pyyaml (all but certainly there already)
cat > "$WORK/needed.txt" <<EOF
ms-swift==4.6.0
deepspeed==$DEEPSPEED
modelscope==$MODELSCOPE
pillow>=10
numpy
pyyaml
hatchling>=1.25
editables
EOF
cat > "$WORK/machine.txt" <<EOF
torch==$GPU_TORCH
transformers==$GPU_TRANSFORMERS
peft
accelerate
sentence-transformers
timm
EOF

echo "== DeepSpeed $DEEPSPEED: building its wheel from the sdist (ops compile at run time, as from PyPI)"
DS_BUILD_OPS=0 "${PIP[@]}" wheel --no-deps --no-build-isolation "deepspeed==$DEEPSPEED" -w "$WORK/built" -q

# pip's resolver for the target platform: writes $WORK/NAME.report.json; returns 1 when the requirements conflict.
# A requirement with only an sdist is built here (pure Python only) and the resolution retried.
resolve() {
    local name=$1 requirements=$2
    for _ in $(seq 1 20); do
        if "${PIP[@]}" install --dry-run --ignore-installed --quiet --report "$WORK/$name.report.json" \
            --target "$WORK/target" "${TARGET[@]}" --find-links "$WORK/built" -r "$requirements" \
            2> "$WORK/$name.err"; then
            return 0
        fi
        local missing
        missing=$(sed -n 's/.*satisfies the requirement \(.*\) (from versions: none).*/\1/p' "$WORK/$name.err" \
            | sed 's/ (from .*//; s/;.*//' | head -1)
        [ -n "$missing" ] || return 1
        echo "   $missing: no wheel for the target; building one from its sdist with $BUILD_PYTHON"
        "$BUILD_PYTHON" -m pip --disable-pip-version-check wheel --no-deps "$missing" -w "$WORK/built" -q \
            || die "cannot build a wheel of $missing"
        if ls "$WORK/built"/*.whl | grep -v -E -- "-(none-any|cp${TARGET_PYTHON/./}-[a-z0-9_]+-linux_x86_64)\.whl$" \
            | grep -q .; then
            die "$missing built a wheel for another Python than $TARGET_PYTHON: set BUILD_PYTHON to a Python $TARGET_PYTHON"
        fi
    done
    die "resolving $name: more than 20 sdists"
}
pins_of() {  # name==version of every package of a report
    "$PYTHON" -c '
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(item["metadata"]["name"] + "==" + item["metadata"]["version"])' "$1"
}

if [ -n "$GPU_FREEZE" ]; then
    echo "== what the GPU machine has: $GPU_FREEZE"
    grep -E '^[A-Za-z0-9_.-]+==' "$GPU_FREEZE" > "$WORK/machine.pins"
else
    echo "== what the GPU machine has: ESTIMATED by resolving its stated packages for Python $TARGET_PYTHON"
    resolve machine "$WORK/machine.txt" || { cat "$WORK/machine.err"; die "cannot resolve the machine's packages"; }
    pins_of "$WORK/machine.report.json" > "$WORK/machine.pins"
fi
# the machine's torch and transformers stay as they are; a resolution that needs others fails, naming them
grep -i -E '^(torch|transformers)==' "$WORK/machine.pins" > "$WORK/keep.txt" || true
echo "   $(wc -l < "$WORK/machine.pins") packages, kept fixed: $(tr '\n' ' ' < "$WORK/keep.txt")"

echo "== resolving ms-swift 4.6.0, deepspeed $DEEPSPEED, modelscope $MODELSCOPE on top of them"
cat "$WORK/machine.pins" "$WORK/needed.txt" > "$WORK/all.txt"
if ! resolve full "$WORK/all.txt"; then  # some installed version conflicts: only torch and transformers fixed
    echo "   the machine's versions conflict with them:"; grep -i -E 'conflict|requires|requested' "$WORK/full.err" \
        | sed 's/^/     /' | head -12
    sed 's/==.*//' "$WORK/machine.pins" | grep -v -i -x -E 'torch|transformers' | cat - "$WORK/keep.txt" \
        "$WORK/needed.txt" > "$WORK/all.txt"
    resolve full "$WORK/all.txt" || { cat "$WORK/full.err"; die "ms-swift 4.6.0 cannot install beside the machine's \
$(tr '\n' ' ' < "$WORK/keep.txt")(above)"; }
fi
FULL=$WORK/full.report.json
"$PYTHON" - "$FULL" "$WORK/machine.pins" "$WORK/download.txt" <<'EOF'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {}
for line in open(sys.argv[2]):
    name, _, version = line.strip().partition("==")
    have[norm(name)] = version
wanted, changed = [], []
for item in json.load(open(sys.argv[1]))["install"]:
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if norm(name).startswith("nvidia-") or norm(name) in ("torch", "triton"):
        continue  # the machine's CUDA torch
    if have.get(norm(name)) == version:
        continue
    if norm(name) in have:
        changed.append(f"{name} {have[norm(name)]} -> {version}")
    wanted.append(f"{name}=={version}")
open(sys.argv[3], "w").write("\n".join(wanted) + "\n")
print(f"   {len(wanted)} packages to carry")
for line in changed:
    print(f"   the machine's version is replaced: {line}")
EOF

echo "== downloading"
"${PIP[@]}" download --no-deps --quiet "${TARGET[@]}" --find-links "$WORK/built" -r "$WORK/download.txt" \
    -d "$OUT/wheels"

echo "== the check's data: $PRODUCTS products of $CATALOG, and their boxes"
"$PYTHON" - "$CATALOG" "$OUT/catalog" "$PRODUCTS" <<'EOF'
import csv, itertools, shutil, sys
from pathlib import Path
source, out, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
(out / "images").mkdir(parents=True)
with (source / "products.csv").open(newline="", encoding="utf-8") as file:
    reader = csv.DictReader(file)
    rows = list(itertools.islice(reader, count))
with (out / "products.csv").open("w", newline="", encoding="utf-8") as file:
    writer = csv.DictWriter(file, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(rows)
for row in rows:
    shutil.copy(source / row["image"], out / row["image"])
print(f"   {len(rows)} products")
EOF
"$MOON_SWIFT" prepare-data --catalog "$OUT/catalog" --out "$WORK/rows" --hard-negatives 1 > "$WORK/prepare.log"
"$MOON_SWIFT" detect --dataset "$WORK/rows/train.jsonl" "$WORK/rows/val_products.jsonl" --out "$OUT/boxes.jsonl" \
    --quiet | sed 's/^/   /'

cat > "$OUT/install.sh" <<EOF
#!/usr/bin/env bash
# On the GPU machine, from the repository root: python -m pip must be the Python 3.12 with torch 2.11.
set -euo pipefail
BUNDLE=\$(cd "\$(dirname "\$0")" && pwd)
python -m pip install --no-index --find-links "\$BUNDLE/wheels" -r /dev/stdin <<'REQUIREMENTS'
$(sed 's/==.*//' "$WORK/download.txt")
REQUIREMENTS
python -m pip install --no-index --no-deps --no-build-isolation -e .
python -c "import swift, deepspeed, modelscope, moon_swift; print('gpu bundle installed: ms-swift', swift.__version__)"
EOF
chmod +x "$OUT/install.sh"
rm -rf "$WORK"

(cd "$OUT/wheels" && ls -l --block-size=1 | awk 'NR > 1 {printf "%10.2f MiB  %s\n", $5 / 1048576, $9}' \
    | sort -rn) > "$OUT/sizes.txt"
WHEELS=$(du -sb "$OUT/wheels" | cut -f1)
TOTAL=$(du -sb "$OUT" | cut -f1)
echo "== $OUT"
echo "largest wheels:"; head -8 "$OUT/sizes.txt"
"$PYTHON" - "$WHEELS" "$TOTAL" "$LIMIT_MIB" "$(ls "$OUT/wheels" | wc -l)" <<'EOF'
import sys
wheels, total, limit, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
print(f"wheels: {count} files, {wheels / 2**20:.1f} MiB; bundle in all (wheels + catalog + boxes): "
      f"{total / 2**20:.1f} MiB; limit {limit} MiB: {'fits' if total <= limit * 2**20 else 'DOES NOT FIT'}")
EOF
