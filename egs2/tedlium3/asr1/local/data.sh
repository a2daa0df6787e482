#!/usr/bin/env bash
# TED-LIUM release 3 (openslr.org SLR51) downloaded (when not already under
# ${TEDLIUM3:-downloads}/TEDLIUM_release-3) -> data/{train,dev,test}: one 16 kHz wav per
# utterance, and data/{train,dev,test}_doc${doc_minutes}: consecutive utterances of each talk
# joined into documents of at most ${doc_minutes} minutes (espnet_mamba.bin.make_documents).
# Usage: local/data.sh [doc_minutes (default 5; 0: utterances only)]
set -euo pipefail
doc_minutes=${1:-5}
download_dir=${TEDLIUM3:-downloads}
url=https://www.openslr.org/resources/51/TEDLIUM_release-3.tgz

# The archive is removed once extracted: where it is still there, a download or an extraction
# was cut short, and both go on (wget --continue) or start again (tar).
if [ ! -d "${download_dir}/TEDLIUM_release-3/legacy" ] || [ -f "${download_dir}/TEDLIUM_release-3.tgz" ]; then
    mkdir -p "${download_dir}"
    echo "downloading ${url} (about 54 GB)"
    wget --continue --directory-prefix "${download_dir}" "${url}"
    tar -xzf "${download_dir}/TEDLIUM_release-3.tgz" -C "${download_dir}"
    rm "${download_dir}/TEDLIUM_release-3.tgz"
fi
for split in train dev test; do
    python local/prepare_tedlium.py --split_dir "${download_dir}/TEDLIUM_release-3/legacy/${split}" \
        --data_dir "data/${split}_talks"
    python -m espnet_mamba.bin.make_documents --data_dir "data/${split}_talks" --out_dir "data/${split}" \
        --max_minutes 0 --audio_dir "${download_dir}/wav/${split}"
    if [ "${doc_minutes}" != 0 ]; then
        python -m espnet_mamba.bin.make_documents --data_dir "data/${split}_talks" --out_dir "data/${split}_doc${doc_minutes}" \
            --max_minutes "${doc_minutes}" --audio_dir "${download_dir}/wav/${split}_doc${doc_minutes}"
    fi
done
