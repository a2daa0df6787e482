#!/usr/bin/env bash
# Long-context (document-level) ASR on TED-LIUM 3 with a bidirectional Mamba-HuBERT (paper 1):
# CTC fine-tuning and decoding on documents of up to --doc_minutes minutes of consecutive
# utterances of a talk; --doc_minutes 0 trains and decodes single utterances instead.
#
#   ./run.sh --pretrained ssl.zip [--preset extbimamba_base] [--doc_minutes 5]
#
# Presets with a config here: extbimamba_base, innbimamba_base, transformer_base (the baseline).
# Other options go to asr.sh (--stage, --stop_stage, --ngpu, --hf_repo, ...).
set -euo pipefail

preset=extbimamba_base
doc_minutes=5
pretrained=""
asr_args=()
while [ $# -gt 0 ]; do
    if [[ "$1" == --*=* ]]; then  # --name=value -> --name value
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case "$1" in
        --preset|--doc_minutes|--pretrained) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        *) asr_args+=("$1"); shift ;;
    esac
done
[ -n "${pretrained}" ] || { echo "$0: --pretrained <packed SSL zip> is required" >&2; exit 1; }
asr_config=conf/tuning/train_asr_ctc_doc_${preset}.yaml
if [ ! -f "${asr_config}" ]; then  # before the download and data preparation, not after them
    echo "$0: no config for preset '${preset}'; presets:" \
        "$(find conf/tuning -name 'train_asr_ctc_doc_*.yaml' | sed 's/.*doc_//; s/\.yaml$//' | sort | tr '\n' ' ')" >&2
    exit 1
fi

suffix=""
[ "${doc_minutes}" != 0 ] && suffix=_doc${doc_minutes}

./asr.sh \
    --local_data_opts "${doc_minutes}" \
    --train_set "train${suffix}" --valid_set "dev${suffix}" --test_sets "test${suffix} dev${suffix}" \
    --token_type char \
    --asr_config "${asr_config}" \
    --pretrained "${pretrained}" \
    --inference_tool ctc --inference_config conf/decode_asr_doc.yaml \
    --streaming false \
    --asr_tag "asr_ctc_${preset}${suffix}" --model_name "tedlium3_ctc_${preset}${suffix}" \
    "${asr_args[@]+"${asr_args[@]}"}"
