#!/usr/bin/env bash
# Export the Python packages of one commit into a folder, to time old code beside new.
#
#   tools/export_code.sh REV DIR
#
# DIR gets espnet_mamba/ and s3prl_upstream/ as they were at REV, with the presets as plain
# files (the checkout's espnet_mamba/presets is a link to ../conf/presets, which would not
# resolve there). Python's -m imports from the working directory first, so a command run
# from DIR uses the old code, e.g. through ESPnet on a GPU machine:
#
#   tools/export_code.sh 98b8b3d .gpu/old
#   (cd .gpu/old && PYTHONPATH=$PWD python -m espnet_mamba.bin.ssl_throughput --presets mamba_base ...)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 REV DIR" >&2; exit 2; }
rev=$1 dir=$(realpath -m "$2")
cd "$(dirname "$0")/.."
git rev-parse --verify --quiet "$rev^{commit}" > /dev/null || { echo "$0: no commit $rev" >&2; exit 2; }
if [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "$0: $dir exists and is not empty; give a new folder" >&2
    exit 2
fi
mkdir -p "$dir"
git archive "$rev" espnet_mamba s3prl_upstream | tar -x -C "$dir"
if [ -L "$dir/espnet_mamba/presets" ]; then
    rm "$dir/espnet_mamba/presets"
    mkdir "$dir/espnet_mamba/presets"
    git archive "$rev" conf/presets | tar -x --strip-components=2 -C "$dir/espnet_mamba/presets"
fi
echo "$dir: espnet_mamba and s3prl_upstream of $(git rev-parse --short "$rev")"
