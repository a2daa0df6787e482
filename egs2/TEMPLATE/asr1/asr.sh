#!/usr/bin/env bash
# CTC fine-tuning of a Mamba-HuBERT model through ESPnet's ASR task, in numbered stages.
# Recipes (egs2/<corpus>/asr1/run.sh) call this with their options; every stage can be run
# alone (--stage N --stop_stage N), a finished stage is skipped (its .done marker or output),
# and a killed training stage resumes from its last checkpoint when run again.
#
#   1  data preparation (local/data.sh)
#   2  speech shape files
#   3  token list (--token_type char | bpe)
#   4  training config: with --pretrained, the SSL model's encoder + init_param from it
#   5  training                                                    (espnet_mamba.bin.asr_train)
#   6  offline decoding of --test_sets                             (espnet_mamba.bin.asr_inference)
#   7  streaming decoding of --test_sets, causal models only       (espnet_mamba.bin.asr_stream)
#   8  scoring: WER/CER of both into RESULTS.md                    (espnet_mamba.bin.asr_score)
#   9  packing: ESPnet model zoo zip with a model card             (espnet2.bin.pack asr)
#  10  upload to the Hugging Face Hub, only with --hf_repo user/name
set -euo pipefail


stage=1
stop_stage=10
ngpu=0                  # number of GPUs; > 1 trains with ESPnet's DDP
num_nodes=1
dist_init_method="env://"
local_data_opts=""      # arguments for local/data.sh
train_set=train
valid_set=dev
test_sets="test"
token_type=char         # char or bpe
nbpe=5000               # bpe vocabulary size
asr_config=conf/train_asr.yaml
pretrained=""           # packed SSL zip, SSL exp dir or .pth: fine-tune it (else train from scratch)
train_args=""           # extra arguments for espnet_mamba.bin.asr_train
inference_tool=espnet   # stage 6: espnet (asr_inference: ESPnet's beam search) or ctc (asr_stream --offline:
                        # frame-synchronous CTC decoding, for long documents and CTC-only models)
inference_config=conf/decode_asr.yaml  # options of that tool
inference_args=""       # extra arguments for it
streaming=true          # stage 7; set false for bidirectional models (they cannot stream)
stream_config=""        # YAML of espnet_mamba.bin.asr_stream options (chunk_ms, decoder, beam_size)
stream_args=""          # extra arguments for espnet_mamba.bin.asr_stream, e.g. "--chunk_ms 320"
expdir=exp
dumpdir=dump
asr_tag=asr
packed_dir=packed
model_name=mamba_hubert_asr
pack_options=""         # more files the packed model needs (e.g. a frontend's upstream checkpoint)
results=RESULTS.md
hf_repo=""              # user/name: stage 10 uploads the packed model there

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/stage_funcs.sh
check_stages

asr_exp=${expdir}/${asr_tag}
token_dir=data/token_list/${token_type}
token_list=${token_dir}/tokens.txt
packed=${packed_dir}/${model_name}.zip



# the data sets stage 1 makes depend on these (e.g. TED-LIUM's --doc_minutes): a new value prepares them
data_settings="${local_data_opts} | ${train_set} ${valid_set} ${test_sets}"
if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ] && ! done_mark data "${data_settings}"; then
    log "stage 1: data preparation"
    # shellcheck disable=SC2086
    local/data.sh ${local_data_opts}
    mark_done data "${data_settings}"
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    for dset in ${train_set} ${valid_set}; do
        done_mark "${dumpdir}/shapes/${dset}" && continue
        log "stage 2: speech shape file of ${dset}"
        python -m espnet_mamba.bin.shapes --wav_scp "data/${dset}/wav.scp" --out "${dumpdir}/shapes/${dset}/speech_shape"
        mark_done "${dumpdir}/shapes/${dset}"
    done
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ] && ! done_mark "${token_dir}"; then
    log "stage 3: ${token_type} token list -> ${token_list}"
    mkdir -p "${token_dir}"
    bpe_args=""
    if [ "${token_type}" = bpe ]; then
        cut -d' ' -f2- data/${train_set}/text > "${token_dir}/train.txt"
        python -c 'import sys, sentencepiece; sentencepiece.SentencePieceTrainer.train(" ".join(sys.argv[1:]))' \
            --input="${token_dir}/train.txt" --vocab_size="${nbpe}" --model_type=unigram \
            --model_prefix="${token_dir}/bpe" --character_coverage=1.0 --input_sentence_size=100000000
        bpe_args="--bpemodel ${token_dir}/bpe.model"
    elif [ "${token_type}" != char ]; then
        log "--token_type must be char or bpe, got ${token_type}"; exit 1
    fi
    # shellcheck disable=SC2086
    python -m espnet2.bin.tokenize_text --token_type "${token_type}" ${bpe_args} \
        --input data/${train_set}/text --output "${token_list}" --field 2- \
        --write_vocabulary true --add_symbol '<blank>:0' --add_symbol '<unk>:1' --add_symbol '<sos/eos>:-1'
    mark_done "${token_dir}"
fi

bpe_args=""
[ "${token_type}" = bpe ] && bpe_args="--bpemodel ${token_dir}/bpe.model"

config_inputs="--asr_config ${asr_config} --pretrained '${pretrained}'"  # what stage 4 makes the config from
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && [ -f "${asr_exp}/train_config.inputs" ] \
        && [ "$(cat "${asr_exp}/train_config.inputs")" != "${config_inputs}" ]; then
    log "${asr_exp}/train_config.yaml was made from $(cat "${asr_exp}/train_config.inputs"), not ${config_inputs}:" \
        "remove ${asr_exp} or give another --asr_tag" >&2
    exit 1
fi
if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ] && [ ! -f "${asr_exp}/train_config.yaml" ]; then
    mkdir -p "${asr_exp}"
    if [ -n "${pretrained}" ]; then
        log "stage 4: fine-tuning config from ${asr_config} and ${pretrained}"
        python -m espnet_mamba.bin.finetune_config --asr_config "${asr_config}" --pretrained "${pretrained}" \
            --out "${asr_exp}/train_config.yaml" --unpack_dir "${asr_exp}/pretrained"
    else
        log "stage 4: no --pretrained: training ${asr_config} from scratch"
        cp "${asr_config}" "${asr_exp}/train_config.yaml"
    fi
    printf '%s' "${config_inputs}" > "${asr_exp}/train_config.inputs"
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ] && ! done_mark "${asr_exp}"; then
    log "stage 5: training -> ${asr_exp} (log: ${asr_exp}/train.log)"
    dist_args=""
    if [ "${ngpu}" -gt 1 ] || [ "${num_nodes}" -gt 1 ]; then
        # ESPnet counts nodes in --dist_world_size and takes this node's rank from --dist_rank (or RANK)
        dist_args="--multiprocessing_distributed true --dist_launcher none --dist_world_size ${num_nodes} --dist_init_method ${dist_init_method}"
    fi
    # shellcheck disable=SC2086
    ${train_cmd} python -m espnet_mamba.bin.asr_train \
        --config "${asr_exp}/train_config.yaml" \
        --ngpu "${ngpu}" ${dist_args} \
        --use_preprocessor true --token_type "${token_type}" --token_list "${token_list}" ${bpe_args} \
        --train_data_path_and_name_and_type data/${train_set}/wav.scp,speech,sound \
        --train_data_path_and_name_and_type data/${train_set}/text,text,text \
        --valid_data_path_and_name_and_type data/${valid_set}/wav.scp,speech,sound \
        --valid_data_path_and_name_and_type data/${valid_set}/text,text,text \
        --train_shape_file ${dumpdir}/shapes/${train_set}/speech_shape \
        --valid_shape_file ${dumpdir}/shapes/${valid_set}/speech_shape \
        --resume true \
        --output_dir "${asr_exp}" ${train_args} 2>&1 | tee -a "${asr_exp}/train.log"
    best_model "${asr_exp}" > /dev/null
    mark_done "${asr_exp}"
fi

if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    model=$(best_model "${asr_exp}")
    for dset in ${test_sets}; do
        out=${asr_exp}/decode_offline/${dset}
        done_mark "${out}" && continue
        log "stage 6: offline decoding of ${dset} (${inference_tool}) -> ${out}/text"
        if [ "${inference_tool}" = espnet ]; then
            # ESPnet's decoder runs on one GPU at most
            # shellcheck disable=SC2086
            python -m espnet_mamba.bin.asr_inference --config "${inference_config}" \
                --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model}" \
                --data_path_and_name_and_type data/${dset}/wav.scp,speech,sound \
                --ngpu "$(( ngpu > 0 ? 1 : 0 ))" --output_dir "${out}/logdir" ${inference_args}
            cp "${out}/logdir/1best_recog/text" "${out}/text"
        elif [ "${inference_tool}" = ctc ]; then
            device=cpu; [ "${ngpu}" -gt 0 ] && device=cuda
            # shellcheck disable=SC2086
            python -m espnet_mamba.bin.asr_stream --offline --config "${inference_config}" \
                --model "${asr_exp}/config.yaml" --model_file "${model}" --device "${device}" \
                --wav_scp data/${dset}/wav.scp --output_dir "${out}" --quiet ${inference_args}
        else
            log "--inference_tool must be espnet or ctc, got ${inference_tool}"; exit 1
        fi
        mark_done "${out}"
    done
fi

if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ] && [ "${streaming}" = true ]; then
    model=$(best_model "${asr_exp}")
    for dset in ${test_sets}; do
        out=${asr_exp}/decode_stream/${dset}
        done_mark "${out}" && continue
        log "stage 7: streaming decoding of ${dset} -> ${out}/text"
        config_arg=()
        [ -n "${stream_config}" ] && config_arg=(--config "${stream_config}")
        # shellcheck disable=SC2086
        python -m espnet_mamba.bin.asr_stream "${config_arg[@]+"${config_arg[@]}"}" --model "${asr_exp}/config.yaml" --model_file "${model}" \
            --wav_scp data/${dset}/wav.scp --output_dir "${out}" --quiet ${stream_args}
        mark_done "${out}"
    done
fi

if [ "${stage}" -le 8 ] && [ "${stop_stage}" -ge 8 ] && [ ! -f "${asr_exp}/RESULTS.md" ]; then
    log "stage 8: scoring -> ${asr_exp}/RESULTS.md and ${results}"
    model=$(best_model "${asr_exp}")
    {
        echo "# ${model_name}"
        echo
        echo "- model: ${asr_exp} ($(basename "${model}")), config: ${asr_config}"
        echo "- pretrained: ${pretrained:-none}"
        echo "- date: $(date -u '+%Y-%m-%d'), host: $(uname -n), OMP_NUM_THREADS: ${OMP_NUM_THREADS:-unset}"
        echo
    } > "${asr_exp}/RESULTS.md.tmp"
    for dset in ${test_sets}; do
        hyps="--hyp offline=${asr_exp}/decode_offline/${dset}/text"
        stream_dir=${asr_exp}/decode_stream/${dset}
        [ -f "${stream_dir}/text" ] && hyps="${hyps} --hyp streaming=${stream_dir}/text"
        # shellcheck disable=SC2086
        python -m espnet_mamba.bin.asr_score --ref data/${dset}/text ${hyps} \
            --title "${dset}" --out "${asr_exp}/RESULTS.md.tmp" > /dev/null
        if [ -f "${stream_dir}/stream_stats.json" ]; then
            {
                echo "Streaming (${dset}):"; echo
                echo '```json'; cat "${stream_dir}/stream_stats.json"; echo '```'; echo
            } >> "${asr_exp}/RESULTS.md.tmp"
        fi
    done
    mv "${asr_exp}/RESULTS.md.tmp" "${asr_exp}/RESULTS.md"
    cp "${asr_exp}/RESULTS.md" "${results}"
    cat "${results}"
fi

if [ "${stage}" -le 9 ] && [ "${stop_stage}" -ge 9 ] && [ ! -f "${packed}" ]; then
    log "stage 9: packing -> ${packed}"
    model=$(best_model "${asr_exp}")
    results_arg=""
    [ -f "${asr_exp}/RESULTS.md" ] && results_arg="--results ${asr_exp}/RESULTS.md"
    # shellcheck disable=SC2086
    python -m espnet_mamba.bin.model_card --exp_dir "${asr_exp}" --model_file "${model}" ${results_arg} \
        --out "${asr_exp}/README.md"
    options="--option ${asr_exp}/README.md"
    [ -f "${asr_exp}/RESULTS.md" ] && options="${options} --option ${asr_exp}/RESULTS.md"
    [ "${token_type}" = bpe ] && options="${options} --option ${token_dir}/bpe.model"
    for f in ${pack_options}; do options="${options} --option ${f}"; done
    # shellcheck disable=SC2086
    pack_zip asr "${packed}" --asr_train_config "${asr_exp}/config.yaml" --asr_model_file "${model}" ${options}
fi

if [ "${stage}" -le 10 ] && [ "${stop_stage}" -ge 10 ]; then
    if [ -n "${hf_repo}" ]; then
        log "stage 10: uploading ${packed} to https://huggingface.co/${hf_repo}"
        python -m espnet_mamba.bin.hf_upload --packed "${packed}" --hf_repo "${hf_repo}"
    else
        log "stage 10: upload skipped (give --hf_repo user/name to publish the packed model)"
    fi
fi

[ -f "${packed}" ] && log "packed model: $(cd "$(dirname "${packed}")" && pwd)/$(basename "${packed}")"
exit 0
