#!/usr/bin/env bash
# Mamba-HuBERT pretraining on mini_an4 (5 training utterances shipped in the espnet wheel):
# the whole two-iteration HuBERT recipe on CPU in a few minutes. A smoke test of the pipeline,
# not a useful model; egs2/librispeech/ssl1 is the real one.
set -euo pipefail

./ssl.sh \
    --train_set train \
    --valid_set dev \
    --test_sets "test" \
    --n_clusters_iter0 20 \
    --n_clusters_iter1 20 \
    --feature_layer 1 \
    --train_config_iter0 conf/train_ssl_iter0.yaml \
    --train_config_iter1 conf/train_ssl_iter1.yaml \
    --model_name mini_an4_mamba_hubert \
    "$@"
