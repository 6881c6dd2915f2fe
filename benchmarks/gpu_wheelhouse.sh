#!/usr/bin/env bash
# What an air-gapped GPU machine needs to run benchmarks/gpu_check.py, prepared on a connected machine.
#
#   benchmarks/gpu_wheelhouse.sh [OUT] [GPU_FREEZE]        (from the repository root; OUT default runs/gpu_bundle)
#
# GPU_FREEZE says what the GPU machine already has: `pip freeze` run there, carried here as text, or by default
# benchmarks/gpu_machine_packages.txt (this project's GPU test machine as the workplace's notes list it; a bare
# name there is a package of unknown version). Its known versions constrain the resolution (one that conflicts
# with the check's needs is replaced; torch or transformers in conflict stop the script); which packages are
# then carried is benchmarks/gpu_wheels_to_carry.py's rule (a package of unknown version there is carried only
# when a carried package bounds it from above; the others it leaves to the machine are printed by name).
#
# OUT gets:
#   wheels/        the wheels the GPU machine lacks, for CPython 3.12 on manylinux x86_64: ms-swift 4.6.0, DeepSpeed
#                  (an sdist on PyPI: built here with `pip wheel --no-deps`), ModelScope, their dependencies, and
#                  hatchling for the editable install of this checkout (the working tree travels anyway). Not
#                  torch. No MMDetection / mmcv / mmengine, faiss or Milvus: the check's training and encoding path
#                  does not import them (tests/benchmarks/test_gpu_check.py runs it with them unimportable).
#   catalog/       the first PRODUCTS (default 1000) products of the dev catalog (products.csv + images/, copies)
#   boxes.jsonl    their core-product boxes (`moon-swift detect`, the bundled detector, here on the CPU)
#   install.sh     run on the GPU machine from the repository root: offline install of wheels/ + this checkout
#                  into $PYTHON there (default python3: on the project's GPU machine the one with torch)
#   sizes.txt      each wheel's size; the total is printed against the 64 MiB that may travel with the tree
#   expected_on_machine.txt   what the install takes from the machine (benchmarks/gpu_standin.sh builds a
#                  stand-in of the machine from it)
#
# Environment: PYTHON (default .venv/bin/python: a Python with this project installed, torch included, for the
# DeepSpeed build and `moon-swift detect`), BUILD_PYTHON (a Python 3.12, default python3.12 on PATH, else pyenv's:
# it resolves, downloads, and builds the wheels of other sdists, linux_x86_64 ones where they have C code),
# PRODUCTS, CATALOG (default ../shared/data/fashion-catalog-dev), TARGET_PYTHON (3.12), TARGET_PLATFORM (the
# manylinux tags of glibc 2.28).
set -euo pipefail

OUT=${1:-runs/gpu_bundle}
GPU_FREEZE=${2:-benchmarks/gpu_machine_packages.txt}
PYTHON=${PYTHON:-.venv/bin/python}
PRODUCTS=${PRODUCTS:-1000}
CATALOG=${CATALOG:-../shared/data/fashion-catalog-dev}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
# torch 2.11 and its CUDA 13 libraries are manylinux_2_18 .. 2_28 wheels: a manylinux2014 (glibc 2.17) tag alone
# excludes them, and pip does not widen an explicit --platform, so every tag of a glibc 2.28 machine is given
TARGET_PLATFORM=${TARGET_PLATFORM:-$(for n in $(seq 28 -1 5); do printf 'manylinux_2_%s_x86_64 ' "$n"; done; echo \
    manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64 linux_x86_64)}
LIMIT_MIB=64  # what may travel to the device machine with the working tree

die() { echo "gpu_wheelhouse: $*" >&2; exit 2; }
[ -f pyproject.toml ] && [ -f benchmarks/gpu_check.py ] || die "run from the repository root"
FALLBACK_PYTHON=$PYTHON
# shellcheck source=benchmarks/target_python.sh
source benchmarks/target_python.sh
[ -x "$PYTHON" ] || die "PYTHON=$PYTHON is not an executable Python (set PYTHON)"
python_version_is "${BUILD_PYTHON:-}" "$TARGET_PYTHON" \
    || die "BUILD_PYTHON=${BUILD_PYTHON:-} is not a Python $TARGET_PYTHON (set BUILD_PYTHON to one: it resolves for it)"
[ -f "$CATALOG/products.csv" ] || die "CATALOG=$CATALOG has no products.csv (a fashion catalog: products.csv + images/)"
[ -f "$GPU_FREEZE" ] || die "GPU_FREEZE: no file $GPU_FREEZE (pip freeze of the GPU machine)"
MOON_SWIFT=$(dirname "$PYTHON")/moon-swift
[ -x "$MOON_SWIFT" ] || die "no moon-swift beside $PYTHON: install this project into that environment"

rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/work"
WORK=$OUT/work
PIP=("$PYTHON" -m pip --disable-pip-version-check)  # builds DeepSpeed, with this project's torch
TARGET_PIP=("$BUILD_PYTHON" -m pip --disable-pip-version-check)  # resolves and downloads for the target
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

echo "== DeepSpeed $DEEPSPEED: building its wheel from the sdist (ops compile at run time, as from PyPI)"
DS_BUILD_OPS=0 "${PIP[@]}" wheel --no-deps --no-build-isolation "deepspeed==$DEEPSPEED" -w "$WORK/built" -q

# pip's resolver for the target platform, the requirements under the constraints: writes $WORK/NAME.report.json;
# returns 1 when they conflict (pip explains a conflict on stdout: $WORK/NAME.out). A requirement with only an
# sdist is built here and the resolution retried.
resolve() {
    local name=$1 requirements=$2 constraints=$3
    for _ in $(seq 1 20); do
        if "${TARGET_PIP[@]}" install --dry-run --ignore-installed --report "$WORK/$name.report.json" \
            --target "$WORK/target" "${TARGET[@]}" --find-links "$WORK/built" -r "$requirements" \
            -c "$constraints" > "$WORK/$name.out" 2> "$WORK/$name.err"; then
            return 0
        fi
        local missing
        missing=$(sed -n 's/.*satisfies the requirement \(.*\) (from versions: none).*/\1/p' "$WORK/$name.err" \
            | sed 's/ (from .*//; s/;.*//' | head -1)
        [ -n "$missing" ] || return 1
        echo "   $missing: no wheel for the target; building one from its sdist with $BUILD_PYTHON"
        "${TARGET_PIP[@]}" wheel --no-deps "$missing" -w "$WORK/built" -q \
            || die "cannot build a wheel of $missing"
    done
    die "resolving $name: more than 20 sdists"
}
echo "== what the GPU machine has: $GPU_FREEZE"
# the known versions (pip freeze's name==version lines; bare names and `name @ URL` are of unknown version) as
# constraints of the resolution
"$PYTHON" benchmarks/gpu_wheels_to_carry.py pins "$GPU_FREEZE" "$WORK/machine.pins"
# the machine's torch and transformers stay as they are; a resolution that needs others fails, naming them
grep -i -E '^(torch|transformers)==' "$WORK/machine.pins" > "$WORK/keep.txt" || true
echo "   kept fixed: $(tr '\n' ' ' < "$WORK/keep.txt")"

echo "== resolving ms-swift 4.6.0, deepspeed $DEEPSPEED, modelscope $MODELSCOPE under the machine's versions"
# A known version that conflicts with them, which pip names as "The user requested (constraint) NAME==...", is
# dropped from the constraints: the package is then replaced (carried, pinned in install.sh). torch and
# transformers are not: the script stops, naming them. A conflict pip names no pin for leaves only those two fixed.
for _ in $(seq 1 20); do
    resolve full "$WORK/needed.txt" "$WORK/machine.pins" && break
    conflicting=$(sed -n 's/^ *The user requested (constraint) \([A-Za-z0-9_.-]*\)==.*/\1/p' "$WORK/full.out" \
        | sort -u | tr '\n' ' ' | sed 's/ $//')
    if [ -z "$conflicting" ]; then
        echo "   the machine's versions conflict with them (pip names no pin); only torch and transformers stay fixed:"
        { grep -v '^WARNING' "$WORK/full.err" || true; } | sed 's/^/     /' | head -12 || true
        resolve full "$WORK/needed.txt" "$WORK/keep.txt" || { cat "$WORK/full.out" "$WORK/full.err"; die \
            "ms-swift 4.6.0 cannot install beside the machine's $(tr '\n' ' ' < "$WORK/keep.txt")(above)"; }
        break
    fi
    if echo " $conflicting " | grep -q -i -E ' (torch|transformers) '; then
        grep -A8 'conflict is caused by' "$WORK/full.out" >&2 || true
        die "the check needs other versions of the machine's $conflicting (above), which it must keep"
    fi
    echo "   the machine's version conflicts with them, so it is replaced: $conflicting"
    pattern=$(echo "$conflicting" | sed 's/[-_.]/[-_.]/g; s/ \+/|/g')
    { grep -v -i -E "^($pattern)==" "$WORK/machine.pins" || true; } > "$WORK/machine.pins.next"
    mv "$WORK/machine.pins.next" "$WORK/machine.pins"
done
[ -s "$WORK/full.report.json" ] || die "resolving: more than 20 conflicting pins"
"$PYTHON" benchmarks/gpu_wheels_to_carry.py choose "$WORK/full.report.json" "$GPU_FREEZE" "$WORK/download.txt" \
    --requirements "$WORK/needed.txt" --install "$WORK/install.txt" --expected "$OUT/expected_on_machine.txt" \
    --python "$TARGET_PYTHON"

echo "== downloading"
"${TARGET_PIP[@]}" download --no-deps --quiet "${TARGET[@]}" --find-links "$WORK/built" -r "$WORK/download.txt" \
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
# On the GPU machine, from the repository root, offline. PYTHON (default python3) is its Python 3.12 with torch.
# A package left to the machine's own version (gpu_wheelhouse.sh printed them) that is too old stops pip here,
# naming it.
set -euo pipefail
BUNDLE=\$(cd "\$(dirname "\$0")" && pwd)
PYTHON=\${PYTHON:-python3}
"\$PYTHON" -m pip install --quiet --no-index --find-links "\$BUNDLE/wheels" -r /dev/stdin <<'REQUIREMENTS'
$(cat "$WORK/install.txt")
REQUIREMENTS
"\$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
"\$PYTHON" -c "import swift, deepspeed, modelscope, moon_swift
print('gpu bundle installed: ms-swift', swift.__version__, 'deepspeed', deepspeed.__version__)"
EOF
chmod +x "$OUT/install.sh"
rm -rf "$WORK"

(cd "$OUT/wheels" && ls -l --block-size=1 | awk 'NR > 1 {printf "%10.2f MiB  %s\n", $5 / 1048576, $9}' \
    | sort -rn) > "$OUT/sizes.txt"
WHEELS=$(du -sb "$OUT/wheels" | cut -f1)
TOTAL=$(du -sb "$OUT" | cut -f1)
# what travels beside it: the tracked files and the untracked ones git does not ignore
TREE=$(git ls-files -z --cached --others --exclude-standard | "$PYTHON" -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.read().split("\0") if p and os.path.isfile(p)))')
echo "== $OUT"
echo "largest wheels:"; head -8 "$OUT/sizes.txt"
"$PYTHON" - "$WHEELS" "$TOTAL" "$TREE" "$LIMIT_MIB" "$(ls "$OUT/wheels" | wc -l)" <<'EOF'
import sys
wheels, total, tree, limit = (int(value) for value in sys.argv[1:5])
mib = 2**20
print(f"wheels: {sys.argv[5]} files, {wheels / mib:.1f} MiB; bundle in all (wheels + catalog + boxes): "
      f"{total / mib:.1f} MiB; with the working tree ({tree / mib:.1f} MiB) {(total + tree) / mib:.1f} MiB of the "
      f"{limit} MiB that may travel: {'fits' if total + tree <= limit * mib else 'DOES NOT FIT'}")
EOF
