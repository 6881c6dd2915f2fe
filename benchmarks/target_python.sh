# Sourced by benchmarks/gpu_wheelhouse.sh and gpu_standin.sh: sets BUILD_PYTHON, unless set, to a Python of
# version TARGET_PYTHON (the GPU machine's), which both scripts need: pip resolves for the Python it runs on (pip
# 23.2 on 3.11 checks Requires-Python against itself despite --python-version: it took numpy 2.4 for 3.12 and
# refused the machine's numpy 2.5), sdists with C code (crcmod, ...) build for it, and the stand-in's venv is one.
# Tried in order: python$TARGET_PYTHON on PATH if it runs, pyenv's newest $TARGET_PYTHON.* (its shim fails while
# another version is selected), then FALLBACK_PYTHON; the caller checks the version of what was found.
if [ -z "${BUILD_PYTHON:-}" ]; then
    for candidate in "$(command -v "python$TARGET_PYTHON" || true)" \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$TARGET_PYTHON".*/bin/python"$TARGET_PYTHON" 2> /dev/null \
            | sort -V -r) "${FALLBACK_PYTHON:-}"; do
        if [ -n "$candidate" ] && "$candidate" -c '' 2> /dev/null; then BUILD_PYTHON=$candidate; break; fi
    done
fi
python_version_is() {  # python_version_is PYTHON X.Y
    [ -n "$1" ] && [ "$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2> /dev/null)" = "$2" ]
}
