#!/usr/bin/env bash
# LibriSpeech (openslr.org SLR12): train-clean-100, dev-clean, dev-other, test-clean, test-other
# downloaded (when not already under ${LIBRISPEECH:-downloads}/LibriSpeech) and turned into
# data/{train_clean_100,dev_clean,dev_other,test_clean,test_other,dev} (dev = both dev parts).
set -euo pipefail
download_dir=${LIBRISPEECH:-downloads}
url=https://www.openslr.org/resources/12
parts="train-clean-100 dev-clean dev-other test-clean test-other"

mkdir -p "${download_dir}"
for part in ${parts}; do
    if [ ! -d "${download_dir}/LibriSpeech/${part}" ]; then
        echo "downloading ${url}/${part}.tar.gz"
        wget --continue --directory-prefix "${download_dir}" "${url}/${part}.tar.gz"
        tar -xzf "${download_dir}/${part}.tar.gz" -C "${download_dir}"
        rm "${download_dir}/${part}.tar.gz"
    fi
    python local/prepare_librispeech.py --corpus_dir "${download_dir}/LibriSpeech/${part}" --data_dir "data/${part//-/_}"
done
python local/prepare_librispeech.py --corpus_dir "${download_dir}/LibriSpeech/dev-clean" \
    --corpus_dir "${download_dir}/LibriSpeech/dev-other" --data_dir data/dev
