#!/usr/bin/env bash
# Set up espnet-mamba: a virtual environment .venv with the pinned stack (Python 3.12,
# torch/torchaudio 2.11.0, espnet 202611, s3prl 0.4.18) and this package, editable.
#   ./setup.sh            set up, then print how to run the main job
#   ./setup.sh --cuda     also build mamba-ssm and causal-conv1d (needs nvcc and a GPU)
#   PYTHON=/path/to/python3.12 ./setup.sh   use that interpreter
set -euo pipefail
cd "$(dirname "$0")"
case "${1:-}" in
    ""|--cuda) ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "$0: unknown option $1 (--cuda, --help)" >&2; exit 2 ;;
esac

is_py312() { [ -n "$1" ] && "$@" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }

find_python() {
    if [ -n "${PYTHON:-}" ]; then
        is_py312 "${PYTHON}" && { echo "${PYTHON}"; return; }
        echo "PYTHON=${PYTHON} is not a Python 3.12" >&2; return 1
    fi
    if command -v python3.12 > /dev/null && is_py312 python3.12; then command -v python3.12; return; fi
    if command -v pyenv > /dev/null; then  # a pyenv-installed 3.12 that is not the active version
        local version
        version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -n 1)
        if [ -n "${version}" ] && is_py312 "$(pyenv root)/versions/${version}/bin/python3.12"; then
            echo "$(pyenv root)/versions/${version}/bin/python3.12"; return
        fi
    fi
    if command -v python3 > /dev/null && is_py312 python3; then command -v python3; return; fi
    echo "No Python 3.12 found: install one (e.g. 'pyenv install 3.12', or your distribution's python3.12) or set PYTHON=/path/to/python3.12" >&2
    return 1
}

PY=$(find_python)
echo "Using $("${PY}" --version) at ${PY}"
[ -x .venv/bin/python ] && is_py312 .venv/bin/python || { rm -rf .venv; "${PY}" -m venv .venv; }
.venv/bin/python -m pip install --quiet --upgrade pip
extras="test"
[ "${1:-}" = "--cuda" ] && extras="test,cuda"
if [ "${extras}" = "test,cuda" ]; then
    # mamba-ssm and causal-conv1d compile against the installed torch
    .venv/bin/python -m pip install --quiet -e ".[test]"
    MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
        .venv/bin/python -m pip install --no-build-isolation -e ".[${extras}]"
else
    .venv/bin/python -m pip install --quiet -e ".[${extras}]"
fi
.venv/bin/python -c "import espnet_mamba, s3prl_upstream, espnet_mamba.espnet.tasks; print('espnet-mamba', espnet_mamba.__version__, 'ready')"
cat <<'MSG'

Set up. The main job, the tiny CPU pretraining recipe on ESPnet's bundled mini_an4 data:
    cd egs2/mini_an4/ssl1 && ./run.sh
Tests:
    ./run_tests.sh
MSG
