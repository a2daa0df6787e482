#!/usr/bin/env bash
# LibriSpeech-100 ASR on a pretrained Mamba-HuBERT (egs2/librispeech/ssl1 or any packed SSL zip).
#
#   ./run.sh --pretrained ssl.zip --preset mamba_base [--downstream ctc]   (default)
#       CTC fine-tuning of the whole model, characters, conf/tuning/train_asr_ctc_<preset>.yaml;
#       causal presets (mamba*, causal_transformer*) are decoded offline and streaming (paper 1).
#   ./run.sh --pretrained ssl.zip --preset conbimamba_base --downstream conformer
#       the frozen model's features (s3prl, weighted sum of layers) into a 12-layer Conformer
#       with hybrid CTC/attention, BPE 5000, beam 20, no LM (paper 2),
#       conf/tuning/train_asr_conformer_frozen_{base,small}.yaml.
# Other options go to asr.sh (--stage, --stop_stage, --ngpu, --hf_repo, ...).
set -euo pipefail

preset=mamba_base
downstream=ctc
pretrained=""
asr_args=()
while [ $# -gt 0 ]; do
    if [[ "$1" == --*=* ]]; then  # --name=value -> --name value
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case "$1" in
        --preset|--downstream|--pretrained) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) asr_args+=("$1"); shift ;;
    esac
done
[ -n "${pretrained}" ] || { echo "$0: --pretrained <packed SSL zip> is required" >&2; exit 1; }
. ./path.sh

causal=$(python -c 'import sys, espnet_mamba; print(str(espnet_mamba.load_config(sys.argv[1]).causal).lower())' "${preset}")
test_sets="test_clean test_other dev_clean dev_other"

case "${downstream}" in
    ctc)
        ./asr.sh \
            --train_set train_clean_100 --valid_set dev --test_sets "${test_sets}" \
            --token_type char \
            --asr_config "conf/tuning/train_asr_ctc_${preset}.yaml" \
            --pretrained "${pretrained}" \
            --inference_config conf/decode_asr_ctc.yaml \
            --streaming "${causal}" --stream_config conf/decode_asr_streaming.yaml \
            --asr_tag "asr_ctc_${preset}" --model_name "librispeech_100_ctc_${preset}" \
            "${asr_args[@]+"${asr_args[@]}"}" ;;
    conformer)
        # The upstream checkpoint travels inside the packed ASR model: the config names it by a
        # path relative to this directory, which espnet2.bin.pack stores and unpacking rewrites.
        # (A --train_args of yours must repeat this --frontend_conf.)
        upstream=exp/upstream/${preset}.zip
        mkdir -p exp/upstream
        cp "${pretrained}" "${upstream}"
        size=${preset##*_}
        ./asr.sh \
            --train_set train_clean_100 --valid_set dev --test_sets "${test_sets}" \
            --token_type bpe --nbpe 5000 \
            --asr_config "conf/tuning/train_asr_conformer_frozen_${size}.yaml" \
            --inference_config conf/decode_asr_conformer.yaml \
            --train_args "--frontend_conf frontend_conf.path_or_url=${upstream}" \
            --streaming false --pack_options "${upstream}" \
            --asr_tag "asr_conformer_${preset}" --model_name "librispeech_100_conformer_${preset}" \
            "${asr_args[@]+"${asr_args[@]}"}" ;;
    *) echo "$0: --downstream must be ctc or conformer, got ${downstream}" >&2; exit 1 ;;
esac
