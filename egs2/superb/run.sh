#!/usr/bin/env bash
# SUPERB probing of a Mamba-HuBERT checkpoint: the frozen model, a learnable weighted sum of
# its layers and s3prl's light downstream heads, task by task (docs/superb.md).
#
#  1  data preparation: writes ASR's length tables and ER's metadata
#     (--toy true: writes tiny synthetic corpora instead; with --device cpu, a smoke run on CPU)
#  2  training, once per learning rate of --lrs (and per fold for ER)
#  3  evaluation: the learning rate best on dev, its best dev checkpoint on the test split;
#     ASV: every checkpoint of every learning rate; SD: dscore; QbE: DTW per layer,
#     scored with QUESST14's scorer, the best layer on dev on the eval queries
#  4  results table and SUPERB_S (conf/superb_reference.yaml): EXP/RESULTS.md
#
# Tasks (--tasks), their s3prl downstream and the corpus under --corpora_root:
#   PR   ctc + libriphone.yaml    LibriSpeech/{train-clean-100,dev-clean,test-clean}     PER
#   ASR  asr                      LibriSpeech (same)                                     WER
#   KS   speech_commands          speech_commands_v0.01, speech_commands_test_set_v0.01  Acc
#   QbE  quesst14_dtw             quesst14Database                                       MTWV
#   SID  voxceleb1                VoxCeleb1/{dev,test}/wav                               Acc
#   ASV  sv_voxceleb1             VoxCeleb1 (same)                                       EER
#   SD   diarization              Libri2Mix diarization data dirs: diarization/{train,dev,test}  DER
#   IC   fluent_commands          fluent_speech_commands_dataset                         Acc
#   SF   ctc + snips.yaml         SNIPS (with slots.txt)                                 F1 / CER
#   ER   emotion, 5 folds         IEMOCAP (what IEMOCAP_full_release holds)              Acc
set -euo pipefail

stage=1
stop_stage=4
tasks="PR ASR KS QbE SID ASV SD IC SF ER"
upstream_ckpt=          # Mamba-HuBERT checkpoint (packed zip, ESPnet .pth or save_pretrained file)
s3prl_root=             # clone of https://github.com/s3prl/s3prl checked out at v0.4.18
corpora_root=           # where the corpora above are
exp=exp/superb
lrs="1.0e-2 1.0e-3 1.0e-4"   # SUPERB's learning-rate search; the best on dev is reported
device=cuda
qbe_layers=             # hidden states for QbE's DTW; default: all (0 .. num_layers)
dscore_root=            # clone of https://github.com/ftshijt/dscore, for SD's DER
overrides=""            # extra s3prl -o overrides for training, ",,"-separated (e.g. "config.runner.total_steps=1000")
run_args=""             # extra run_downstream arguments (e.g. "--upstream_feature_normalize")
toy=false               # true: tiny synthetic corpora and configs, a few steps per task
python=python3

. ./path.sh
. ./utils/parse_options.sh
. ./utils/stage_funcs.sh
check_stages

[ -e "${upstream_ckpt}" ] || { echo "$0: --upstream_ckpt must name a checkpoint" >&2; exit 1; }
model_ckpt=$(realpath "${upstream_ckpt}")
readonly model_ckpt
mkdir -p "${exp}" && exp=$(realpath "${exp}")
readonly toy_root=${exp}/toy_corpora

if [ "${toy}" = true ]; then
    workdir=${exp}
    tasks=$(for t in ${tasks}; do case ${t} in KS|SID|IC|ER|ASR|QbE|ASV|SD) echo -n "${t} ";; esac; done)
else
    [ -d "${s3prl_root}/s3prl/downstream" ] || { echo "$0: --s3prl_root must be an s3prl clone" >&2; exit 1; }
    [ -d "${corpora_root}" ] || { echo "$0: --corpora_root is required" >&2; exit 1; }
    s3prl_root=$(realpath "${s3prl_root}"); corpora_root=$(realpath "${corpora_root}")
    workdir=${s3prl_root}/s3prl     # s3prl's configs use paths relative to it
fi

# The run_downstream settings of a task: downstream, config, test_split, best_ckpt, folds, setting_prefix
task_info() { ${python} -m s3prl_upstream.superb task-info "$1"; }
# every task known before anything runs: the stages eval task_info's output, where a failure would go unseen
for task in ${tasks}; do task_info "${task}" > /dev/null; done

# -o overrides pointing a task's config at the corpus (empty for toy corpora)
corpus_overrides() {
    [ "${toy}" = true ] && return 0
    local c=${corpora_root} d=config.downstream_expert
    case $1 in
        PR)  echo "${d}.corpus.path='${c}/LibriSpeech'" ;;
        ASR) echo "${d}.datarc.libri_root='${c}/LibriSpeech',,${d}.datarc.bucket_file='${exp}/data/len_for_bucket'" ;;
        KS)  echo "${d}.datarc.speech_commands_root='${c}/speech_commands_v0.01',,${d}.datarc.speech_commands_test_root='${c}/speech_commands_test_set_v0.01'" ;;
        QbE) echo "${d}.datarc.dataset_root='${c}/quesst14Database'" ;;
        SID) echo "${d}.datarc.file_path='${c}/VoxCeleb1'" ;;
        ASV) echo "${d}.datarc.file_path='${c}/VoxCeleb1'" ;;
        SD)  echo "${d}.loaderrc.train_dir='${c}/diarization/train',,${d}.loaderrc.dev_dir='${c}/diarization/dev',,${d}.loaderrc.test_dir='${c}/diarization/test'" ;;
        IC)  echo "${d}.datarc.file_path='${c}/fluent_speech_commands_dataset'" ;;
        SF)  echo "${d}.corpus.path='${c}/SNIPS',,${d}.text.slots_file='${c}/SNIPS/slots.txt'" ;;
        ER)  echo "${d}.datarc.root='${c}/IEMOCAP',,${d}.datarc.meta_data='${c}/IEMOCAP/meta_data'" ;;
    esac
}

config_of() {  # config file of a task
    if [ "${toy}" = true ]; then echo "${toy_root}/$1/config.yaml"; else (eval "$(task_info "$1")"; echo "${workdir}/${config}"); fi
}

# join_overrides OVERRIDE... : one -o value (s3prl separates overrides with ",,"); "none" if empty
join_overrides() { local out="" part; for part in "$@"; do [ -n "${part}" ] && out=${out:+${out},,}${part}; done; echo "${out:-none}"; }

# run_downstream ARGS... : s3prl's run_downstream with mamba_hubert, from ${workdir}
run_downstream() { (cd "${workdir}" && ${python} -m s3prl_upstream.run_downstream "$@" --device "${device}" ${run_args}); }

if [ ${stage} -le 1 ] && [ ${stop_stage} -ge 1 ]; then
    log "Stage 1: data preparation"
    for task in ${tasks}; do
        if [ "${toy}" = true ]; then
            ${python} -m s3prl_upstream.toy_corpora "${task}" "${toy_root}/${task}"
            continue
        fi
        case ${task} in
            ASR) ${python} -m s3prl_upstream.superb_data "${corpora_root}/LibriSpeech" "${exp}/data/len_for_bucket" \
                     train-clean-100 dev-clean test-clean ;;
            ER)  [ -d "${corpora_root}/IEMOCAP/meta_data" ] || \
                     ${python} -m s3prl.downstream.emotion.IEMOCAP_preprocess "${corpora_root}/IEMOCAP" ;;
        esac
    done
fi

if [ ${stage} -le 2 ] && [ ${stop_stage} -ge 2 ]; then
    log "Stage 2: training (learning rates: ${lrs})"
    for task in ${tasks}; do
        [ "${task}" = QbE ] && continue  # no training: DTW on the features
        eval "$(task_info "${task}")"
        for lr in ${lrs}; do
            for fold in ${folds:-none}; do
                expdir=${exp}/${task}/lr${lr}
                fold_override=
                if [ "${fold}" != none ]; then
                    expdir=${expdir}/${fold}; fold_override="config.downstream_expert.datarc.test_fold='${fold}'"
                fi
                [ -f "${expdir}/train.done" ] && continue
                mkdir -p "${expdir}"
                log "  ${task} lr ${lr} ${fold/none/}: ${expdir}"
                # -a resumes from the last checkpoint in expdir
                run_downstream -m train -a -u mamba_hubert -k "${model_ckpt}" -d "${downstream}" \
                    -c "$(config_of "${task}")" -p "${expdir}" \
                    -o "$(join_overrides "config.optimizer.lr=${lr}" "$(corpus_overrides "${task}")" "${fold_override}" "${overrides}")" \
                    >> "${expdir}/train.log"
                touch "${expdir}/train.done"
            done
        done
    done
fi

evaluate_checkpoint() {  # output_dir checkpoint split log: evaluate, outputs (predictions) in output_dir
    run_downstream -m evaluate -e "$2" -t "$3" -o "args.expdir='$1'" > "$4"
}

if [ ${stage} -le 3 ] && [ ${stop_stage} -ge 3 ]; then
    log "Stage 3: evaluation"
    for task in ${tasks}; do
        eval "$(task_info "${task}")"
        case ${task} in
        QbE)
            if [ "${toy}" = true ]; then log "  QbE: toy corpora have no QUESST14 scorer; DTW only"; fi
            num_layers=$(${python} -c "import sys; from espnet_mamba.espnet.checkpoint import load_pretrained as l; print(l(sys.argv[1]).cfg.num_layers)" "${model_ckpt}")
            for layer in ${qbe_layers:-$(seq 0 "${num_layers}")}; do
                for split in dev ${test_split}; do
                    [ "${split}" = "${test_split}" ] && [ "${toy}" != true ] && continue  # eval: best layer only, below
                    out=${exp}/QbE/layer${layer}/${split}
                    mkdir -p "${out}"
                    run_downstream -m evaluate -t "${split}" -l "${layer}" -u mamba_hubert -k "${model_ckpt}" \
                        -d "${downstream}" -c "$(config_of QbE)" -p "${out}" \
                        -o "$(join_overrides "$(corpus_overrides QbE)")" > "${out}/run.log"
                    if [ "${toy}" != true ]; then
                        (cd "${corpora_root}/quesst14Database/scoring" && \
                            ./score-TWV-Cnxe.sh "${out}" groundtruth_quesst14_${split} -10) > "${exp}/QbE/layer${layer}/${split}.log"
                    fi
                done
            done
            [ "${toy}" = true ] && continue
            best=$(${python} -m s3prl_upstream.superb best-setting "${exp}/QbE")
            out=${exp}/QbE/${best}/${test_split}
            mkdir -p "${out}"
            run_downstream -m evaluate -t "${test_split}" -l "${best#layer}" -u mamba_hubert -k "${model_ckpt}" \
                -d "${downstream}" -c "$(config_of QbE)" -p "${out}" -o "$(join_overrides "$(corpus_overrides QbE)")" \
                > "${out}/run.log"
            (cd "${corpora_root}/quesst14Database/scoring" && \
                ./score-TWV-Cnxe.sh "${out}" groundtruth_quesst14_${test_split} -10) > "${exp}/QbE/${best}/test.log"
            ;;
        ASV)
            # no dev set: test every checkpoint of every learning rate, report the best
            for ckpt in "${exp}"/ASV/lr*/states-*.ckpt; do
                [ -f "${ckpt}" ] || continue
                dir=$(dirname "${ckpt}"); name=$(basename "${ckpt}" .ckpt)
                [ -s "${dir}/test_${name}.log" ] && continue
                mkdir -p "${dir}/${name}"
                # the log is the sign of a finished evaluation: it gets its name when the evaluation ends well
                evaluate_checkpoint "${dir}/${name}" "${ckpt}" "${test_split}" "${dir}/test_${name}.log.partial"
                mv "${dir}/test_${name}.log.partial" "${dir}/test_${name}.log"
            done
            ;;
        *)
            best=$(${python} -m s3prl_upstream.superb best-setting "${exp}/${task}")
            log "  ${task}: ${best} is best on dev"
            for fold in ${folds:-none}; do
                expdir=${exp}/${task}/${best}; [ "${fold}" != none ] && expdir=${expdir}/${fold}
                ckpt=${expdir}/${best_ckpt}
                if [ ! -f "${ckpt}" ]; then  # dev never improved on its initial best (e.g. accuracy 0)
                    ckpt=$(ls -v "${expdir}"/states-*.ckpt | tail -n 1)
                    log "  ${task}: no ${best_ckpt} in ${expdir}, testing the last checkpoint ${ckpt}"
                fi
                evaluate_checkpoint "${expdir}" "${ckpt}" "${test_split}" "${expdir}/test.log"
                if [ "${task}" = SD ]; then
                    if [ "${toy}" = true ]; then log "  SD: toy corpora have no reference RTTM; DER not scored"; continue; fi
                    if [ -z "${dscore_root}" ]; then log "  SD: no --dscore_root, DER not scored"; continue; fi
                    scoring=${expdir}/scoring
                    find "${scoring}/predictions" -iname "*.h5" > "${scoring}/file_list"
                    for median in 1 11; do
                        for threshold in 0.3 0.4 0.5 0.6 0.7; do
                            (cd "${workdir}" && ${python} downstream/diarization/make_rttm.py --median=${median} \
                                --threshold=${threshold} --frame_shift="$(cat "${expdir}/frame_shift")" --subsampling=1 \
                                --sampling_rate=16000 "${scoring}/file_list" "${scoring}/hyp_${threshold}_${median}.rttm")
                            ${python} "${dscore_root}/score.py" -r "${corpora_root}/diarization/test/rttm" \
                                -s "${scoring}/hyp_${threshold}_${median}.rttm" > "${scoring}/result_th${threshold}_med${median}"
                        done
                    done
                fi
            done
            ;;
        esac
    done
fi

if [ ${stage} -le 4 ] && [ ${stop_stage} -ge 4 ]; then
    log "Stage 4: results"
    # shellcheck disable=SC2086
    ${python} -m s3prl_upstream.superb collect "${exp}" --reference conf/superb_reference.yaml --tasks ${tasks} \
        | tee "${exp}/RESULTS.md"
fi
