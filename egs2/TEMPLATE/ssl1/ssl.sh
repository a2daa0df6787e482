#!/usr/bin/env bash
# HuBERT-style pretraining of a Mamba-HuBERT preset through ESPnet, in numbered stages.
# Recipes (egs2/<corpus>/ssl1/run.sh) call this with their options; every stage can be run
# alone (--stage N --stop_stage N), a finished stage is skipped (its .done marker), and a
# killed training stage resumes from its last checkpoint when run again.
#
#  1  data preparation (local/data.sh)
#  2  speech shape files
#  3  iteration 0 targets: MFCC features, k-means, labels            (--n_clusters_iter0)
#  4  iteration 0 pretraining                                        (--train_config_iter0)
#  5  iteration 1 targets: layer features of iteration 0, k-means, labels
#                                                  (--feature_layer, --n_clusters_iter1)
#  6  iteration 1 pretraining                                        (--train_config_iter1)
#  7  packing: ESPnet model zoo zip with the k-means models and a model card
#  8  analysis of the final model: MINE per layer, and with --phone_alignments phone purity
#     and CCA (docs/analysis.md)
set -euo pipefail

stage=1
stop_stage=8
ngpu=0                  # number of GPUs; > 1 trains with ESPnet's DDP
num_nodes=1             # > 1: multi-node DDP, see --dist_init_method
dist_init_method="env://"
train_set=train
valid_set=dev
test_sets="test"
n_clusters_iter0=100
n_clusters_iter1=500
feature_layer=6         # hidden state the iteration-1 k-means clusters (0 = input to block 1)
kmeans_portion=1.0      # fraction of training utterances for fitting k-means
train_config_iter0=conf/train_ssl_iter0.yaml
train_config_iter1=conf/train_ssl_iter1.yaml
train_args=""           # extra arguments for espnet_mamba.bin.ssl_train
feature_device=cpu
expdir=exp
dumpdir=dump
packed_dir=packed
model_name=mamba_hubert
phone_alignments=""     # stage 8: CTM file or TextGrid dir (e.g. MFA's) of phone alignments
word_alignments=""      # stage 8: the same for words (CCA with words; optional)
analysis_set=""         # stage 8: data set to analyse (default: the first of test_sets)
analysis_max_utts=200   # stage 8: utterances analysed (every layer's frames are held in memory)
analysis_device=cpu

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/stage_funcs.sh
check_stages


ssl_train() {  # iteration config
    local it=$1 config=$2 labels=${dumpdir}/labels_iter$1 out=${expdir}/ssl_iter$1
    for dset in ${train_set} ${valid_set}; do
        python -m espnet_mamba.bin.kmeans check --wav_scp data/${dset}/wav.scp \
            --labels ${labels}/${dset}/text --n_clusters "$(($(wc -l < ${labels}/tokens.txt) - 1))"
    done
    mkdir -p "${out}"
    local dist_args=""
    if [ "${ngpu}" -gt 1 ] || [ "${num_nodes}" -gt 1 ]; then
        # ESPnet counts nodes in --dist_world_size and takes this node's rank from --dist_rank (or RANK)
        dist_args="--multiprocessing_distributed true --dist_launcher none --dist_world_size ${num_nodes} --dist_init_method ${dist_init_method}"
    fi
    log "iteration ${it}: pretraining -> ${out} (log: ${out}/train.log)"
    # shellcheck disable=SC2086
    ${train_cmd} python -m espnet_mamba.bin.ssl_train \
        --config "${config}" \
        --ngpu "${ngpu}" ${dist_args} \
        --use_preprocessor true --token_type word \
        --token_list ${labels}/tokens.txt \
        --train_data_path_and_name_and_type data/${train_set}/wav.scp,speech,sound \
        --train_data_path_and_name_and_type ${labels}/${train_set}/text,text,text \
        --valid_data_path_and_name_and_type data/${valid_set}/wav.scp,speech,sound \
        --valid_data_path_and_name_and_type ${labels}/${valid_set}/text,text,text \
        --train_shape_file ${dumpdir}/shapes/${train_set}/speech_shape \
        --valid_shape_file ${dumpdir}/shapes/${valid_set}/speech_shape \
        --resume true \
        --output_dir "${out}" ${train_args} 2>&1 | tee -a "${out}/train.log"
    best_model "${out}" > /dev/null  # fails, naming ${out}, where training left no model
    mark_done "${out}"
}

targets() {  # iteration n_clusters feature-args...
    local it=$1 k=$2; shift 2
    local feats=${dumpdir}/feats_iter${it} labels=${dumpdir}/labels_iter${it}
    log "iteration ${it}: features ($*) -> k-means (${k} clusters) -> labels in ${labels}"
    # each step's output is written whole or not at all; run again after a kill, the stage skips
    # the finished steps, and the dump and the labels go on where they stopped
    python -m espnet_mamba.bin.kmeans dump --wav_scp data/${train_set}/wav.scp "$@" \
        --portion "${kmeans_portion}" --device "${feature_device}" --out_dir "${feats}"
    [ -f "${labels}/km.joblib" ] || python -m espnet_mamba.bin.kmeans fit --feats_dir "${feats}" \
        --n_clusters "${k}" --out "${labels}/km.joblib"
    for dset in ${train_set} ${valid_set} ${test_sets}; do
        [ -f "${labels}/${dset}/text" ] || python -m espnet_mamba.bin.kmeans label --wav_scp data/${dset}/wav.scp "$@" \
            --device "${feature_device}" --km "${labels}/km.joblib" --out "${labels}/${dset}/text"
    done
    mark_done "${labels}"
}


if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ] && ! done_mark data; then
    log "stage 1: data preparation"
    local/data.sh
    mark_done data
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ] && ! done_mark ${dumpdir}/shapes; then
    log "stage 2: speech shape files"
    for dset in ${train_set} ${valid_set} ${test_sets}; do
        python -m espnet_mamba.bin.shapes --wav_scp data/${dset}/wav.scp --out ${dumpdir}/shapes/${dset}/speech_shape
    done
    mark_done ${dumpdir}/shapes
fi

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ] && ! done_mark ${dumpdir}/labels_iter0; then
    log "stage 3: iteration 0 targets"
    targets 0 "${n_clusters_iter0}" --kind mfcc
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ] && ! done_mark ${expdir}/ssl_iter0; then
    log "stage 4: iteration 0 pretraining"
    ssl_train 0 "${train_config_iter0}"
fi

if [ ${stage} -le 5 ] && [ ${stop_stage} -ge 5 ] && ! done_mark ${dumpdir}/labels_iter1; then
    log "stage 5: iteration 1 targets from layer ${feature_layer} of iteration 0"
    iter0_model=$(best_model "${expdir}/ssl_iter0")
    targets 1 "${n_clusters_iter1}" --kind layer --layer "${feature_layer}" --checkpoint "${iter0_model}"
fi

if [ ${stage} -le 6 ] && [ ${stop_stage} -ge 6 ] && ! done_mark ${expdir}/ssl_iter1; then
    log "stage 6: iteration 1 pretraining"
    ssl_train 1 "${train_config_iter1}"
fi

packed=${packed_dir}/${model_name}.zip
if [ ${stage} -le 7 ] && [ ${stop_stage} -ge 7 ] && [ ! -f "${packed}" ]; then
    log "stage 7: packing"
    model=$(best_model "${expdir}/ssl_iter1")
    python -m espnet_mamba.bin.model_card --exp_dir "${expdir}/ssl_iter1" --model_file "${model}" \
        --kmeans "${dumpdir}/labels_iter0/km.joblib" "${dumpdir}/labels_iter1/km.joblib" \
        --feature_layer "${feature_layer}" --out "${expdir}/ssl_iter1/README.md"
    pack_zip ssl "${packed}" --ssl_train_config "${expdir}/ssl_iter1/config.yaml" --ssl_model_file "${model}" \
        --option "${expdir}/ssl_iter1/README.md" \
        --option "${dumpdir}/labels_iter0/km.joblib" --option "${dumpdir}/labels_iter1/km.joblib"
fi

if [ ${stage} -le 8 ] && [ ${stop_stage} -ge 8 ] && ! done_mark ${expdir}/analysis; then
    dset=data/${analysis_set:-${test_sets%% *}}
    common=(--wav_scp ${dset}/wav.scp --checkpoint "${packed}" --max_utts "${analysis_max_utts}" --device "${analysis_device}")
    log "stage 8: analysis of ${packed} on ${dset} -> ${expdir}/analysis"
    python -m espnet_mamba.bin.analyze mine "${common[@]}" --input_features mfcc --output_dir ${expdir}/analysis
    if [ -n "${phone_alignments}" ]; then
        python -m espnet_mamba.bin.analyze purity "${common[@]}" --phone_alignments "${phone_alignments}" \
            --normalize_phones --n_clusters "${n_clusters_iter0}" --output_dir ${expdir}/analysis
        cca_words=()
        [ -n "${word_alignments}" ] && cca_words=(--word_alignments "${word_alignments}")
        python -m espnet_mamba.bin.analyze cca "${common[@]}" --phone_alignments "${phone_alignments}" \
            --normalize_phones "${cca_words[@]+"${cca_words[@]}"}" --utt2spk ${dset}/utt2spk --output_dir ${expdir}/analysis
    else
        log "stage 8: phone purity and CCA skipped: no --phone_alignments"
    fi
    mark_done ${expdir}/analysis
fi

[ -f "${packed}" ] && log "packed model: $(cd "$(dirname "${packed}")" && pwd)/$(basename "${packed}")"
exit 0
