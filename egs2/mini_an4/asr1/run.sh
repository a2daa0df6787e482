#!/usr/bin/env bash
# Mamba-HuBERT CTC fine-tuning on mini_an4 (5 training, 2 test utterances shipped in the espnet
# wheel): fine-tunes ../ssl1/packed/*.zip when ../ssl1/run.sh has made it, else trains the same
# tiny model from scratch; character tokens; offline and streaming decoding; WER in RESULTS.md;
# packed model in packed/. A smoke test of the pipeline (WER near 100%), on CPU in minutes.
set -euo pipefail

pretrained=""
for zip in ../ssl1/packed/*.zip; do
    [ -f "${zip}" ] && pretrained=${zip}
done

./asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test" \
    --token_type char \
    --asr_config conf/train_asr.yaml \
    --inference_config conf/decode_asr.yaml \
    --pretrained "${pretrained}" \
    --stream_config conf/decode_asr_streaming.yaml \
    --model_name mini_an4_mamba_hubert_asr \
    "$@"
