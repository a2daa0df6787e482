#!/usr/bin/env bash
# CTC ASR from scratch on a synthetic spoken-command corpus (espeak-ng; 1500 training
# utterances of digits and commands, 7 voices), on CPU: a model trained to a real WER in
# about 1.5 hours on 2 cores, where mini_an4 gives only a smoke test. A causal Mamba (6
# blocks of mamba_small's shape, a narrow CNN); offline and streaming decoding, float32 and,
# with --stream_args --quantize_asr_model, int8 linear layers (docs/asr.md).
set -euo pipefail

./asr.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test" \
    --token_type char \
    --asr_config conf/train_asr.yaml \
    --inference_config conf/decode_asr.yaml \
    --stream_config conf/decode_asr_streaming.yaml \
    --model_name espeak_commands_mamba_asr \
    "$@"
