#!/usr/bin/env bash
# Run the test suite with the project's virtual environment (make it with ./setup.sh).
# Arguments go to pytest, e.g. ./run_tests.sh -m "not slow" or ./run_tests.sh tests/test_model.py
set -uo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || { echo "no .venv: run ./setup.sh first" >&2; exit 1; }
.venv/bin/python -m pytest "$@"
status=$?
if [ ${status} -eq 5 ]; then
    echo "run_tests.sh: pytest collected no tests (nothing selected); not a failure" >&2
    exit 0
fi
exit ${status}
