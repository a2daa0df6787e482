#!/usr/bin/env bash
# The synthetic corpus (tools/espeak_corpus.py, needs espeak-ng) -> data/{train,dev,test}.
# Options: --train N --dev N --test N --seed S (passed to the tool).
set -euo pipefail
root=$(cd ../../.. && pwd)
python "${root}/tools/espeak_corpus.py" --out_dir . "$@"
