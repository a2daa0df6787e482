#!/usr/bin/env bash
# LibriSpeech (openslr.org resource 12) -> Kaldi-style data dirs with FLAC paths:
#   data/train_960   train-clean-100 + train-clean-360 + train-other-500 (281,241 utterances)
#   data/dev         dev-clean + dev-other
#   data/test_clean, data/test_other
# each with wav.scp, text, utt2spk, spk2utt (written by local/prepare_librispeech.py, the
# librispeech_100/asr1 recipe's script).
#
# Where the audio comes from:
#   --librispeech_root DIR   an existing copy: DIR holds the part folders (DIR/train-clean-100,
#                            ...) or a LibriSpeech/ folder with them. Nothing is downloaded.
#                            (run.sh passes its --librispeech_root here through the environment
#                            variable LIBRISPEECH_ROOT, the default of this option.)
#   otherwise                the archives are fetched into --download_dir (wget or curl) and
#                            unpacked there. An archive that was fetched completely before is not
#                            fetched again; an unpacked part is not unpacked again. About 60 GB of
#                            archives and as much again unpacked (--remove_archives true deletes
#                            each archive once it is unpacked).
set -euo pipefail

librispeech_root=${LIBRISPEECH_ROOT:-}
download_dir=downloads
data_dir=data
url=https://www.openslr.org/resources/12
remove_archives=false

. utils/parse_options.sh
parts="train-clean-100 train-clean-360 train-other-500 dev-clean dev-other test-clean test-other"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (local/data.sh) $*"; }
die() { echo "local/data.sh: error: $*" >&2; exit 1; }

fetch() {  # url file (named as the url ends): resume or start a download; non-zero on failure
    if command -v wget > /dev/null; then
        wget --continue --tries 3 --timeout 60 --directory-prefix "$(dirname "$2")" "$1"
    elif command -v curl > /dev/null; then
        curl --fail --location --retry 3 --connect-timeout 60 --continue-at - --output "$2" "$1"
    else
        die "neither wget nor curl is installed: fetch ${1} yourself into $(dirname "$2")/"
    fi
}

if [ -n "${librispeech_root}" ]; then
    [ -d "${librispeech_root}" ] || die "--librispeech_root ${librispeech_root} is not a directory"
    corpus=$(cd "${librispeech_root}" && pwd)
    [ -d "${corpus}/dev-clean" ] || [ ! -d "${corpus}/LibriSpeech" ] || corpus=${corpus}/LibriSpeech
    missing=""
    for part in ${parts}; do
        [ -d "${corpus}/${part}" ] || missing="${missing} ${part}"
    done
    [ -z "${missing}" ] || die "--librispeech_root ${librispeech_root}: no folder for${missing} (in ${corpus})"
    log "using the LibriSpeech copy in ${corpus}"
else
    mkdir -p "${download_dir}"
    corpus=$(cd "${download_dir}" && pwd)/LibriSpeech
    for part in ${parts}; do
        unpacked=${download_dir}/.${part}.unpacked
        archive=${download_dir}/${part}.tar.gz
        [ -f "${unpacked}" ] && [ -d "${corpus}/${part}" ] && continue
        if [ ! -f "${archive}.complete" ]; then
            log "fetching ${url}/${part}.tar.gz -> ${archive}"
            if fetch "${url}/${part}.tar.gz" "${archive}"; then
                touch "${archive}.complete"
            elif [ -s "${archive}" ]; then
                log "WARNING: could not fetch or resume ${url}/${part}.tar.gz; unpacking ${archive} as it is"
            else
                rm -f "${archive}"
                die "cannot fetch ${url}/${part}.tar.gz (offline?). Fetch the archives elsewhere and put" \
                    "them in ${download_dir}/, or pass --librispeech_root with an unpacked copy."
            fi
        fi
        log "unpacking ${archive}"
        tar -xzf "${archive}" -C "${download_dir}" || die "${archive} did not unpack (incomplete? delete it and run again)"
        [ -d "${corpus}/${part}" ] || die "${archive} has no LibriSpeech/${part}/"
        touch "${unpacked}"
        if [ "${remove_archives}" = true ]; then
            rm -f "${archive}"
        fi
    done
fi

prepare() {  # data dir, part...
    local out=$1 dirs=() part
    shift
    for part in "$@"; do dirs+=(--corpus_dir "${corpus}/${part}"); done
    log "${out} <- $*"
    python local/prepare_librispeech.py "${dirs[@]}" --data_dir "${data_dir}/${out}"
}
prepare train_960 train-clean-100 train-clean-360 train-other-500
prepare dev dev-clean dev-other
prepare test_clean test-clean
prepare test_other test-other
for dset in train_960 dev test_clean test_other; do
    log "${data_dir}/${dset}: $(wc -l < "${data_dir}/${dset}/wav.scp") utterances"
done
