#!/usr/bin/env bash
# Mamba-HuBERT pretraining on LibriSpeech 960 h with the papers' two HuBERT iterations
# (README.md): iteration 0 predicts k-means (100) of MFCC for 250k updates, iteration 1
# k-means (500) of hidden state 6 of iteration 0 for 400k updates, 700 s of audio per update.
#
#   ./run.sh [--preset mamba_base] [--ngpu 8] [--num_nodes N --node_rank R --dist_init_method tcp://HOST:PORT]
#            [--librispeech_root DIR] [--accum_grad N] [--tag NAME] [ssl.sh options: --stage, --stop_stage, ...]
#
# --preset NAME       conf/tuning/train_ssl_iter{0,1}_NAME.yaml (one of the 14 presets)
# --ngpu N            GPUs of this node (ESPnet DDP when > 1); the batch of an update is fixed
#                     (batch_bins is ESPnet's global batch), only its split over GPUs changes
# --num_nodes N       nodes of a multi-node run: start the same command on every node, each
#                     with its --node_rank (0 .. N-1) and the same --dist_init_method
# --accum_grad N      split every update into N accumulated steps (less GPU memory): batch_bins / N,
#                     num_iters_per_epoch x N, so the updates and their audio stay the same
# --librispeech_root  an unpacked LibriSpeech to use instead of downloading into downloads/
# --tag NAME          exp/NAME and dump/NAME (default: the preset name)
# Every other option goes to ssl.sh (see its header), later ones winning; a --train_args of
# yours is appended to the one this script makes.
set -euo pipefail

preset=mamba_base
ngpu=1
num_nodes=1
node_rank=""
dist_init_method="env://"
librispeech_root=""
accum_grad=1
tag=""
train_args=""
ssl_args=()
while [ $# -gt 0 ]; do
    if [[ "$1" == --*=* ]]; then  # --name=value -> --name value
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
    fi
    case "$1" in
        --preset|--ngpu|--num_nodes|--node_rank|--dist_init_method|--librispeech_root|--accum_grad|--tag|--train_args)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2 ;;
        --help|-h)
            sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) ssl_args+=("$1"); shift ;;
    esac
done
. ./path.sh

config_iter0=conf/tuning/train_ssl_iter0_${preset}.yaml
config_iter1=conf/tuning/train_ssl_iter1_${preset}.yaml
if [ ! -f "${config_iter0}" ] || [ ! -f "${config_iter1}" ]; then
    echo "$0: no configs for preset '${preset}'; presets:" \
        "$(find conf/tuning -name 'train_ssl_iter0_*.yaml' | sed 's/.*iter0_//; s/\.yaml$//' | sort | tr '\n' ' ')" >&2
    exit 1
fi
tag=${tag:-${preset}}

# Multi-node: ESPnet takes the node's rank from --dist_rank (or the environment's RANK).
dist_train_args=""
if [ "${num_nodes}" -gt 1 ]; then
    if [ -n "${node_rank}" ]; then
        dist_train_args="--dist_rank ${node_rank}"
    elif [ -z "${RANK:-}" ]; then
        echo "$0: --num_nodes ${num_nodes} needs --node_rank (0 for the node of --dist_init_method's HOST)" >&2
        exit 1
    fi
    if [ "${dist_init_method}" = "env://" ] && [ -z "${MASTER_ADDR:-}" ]; then
        echo "$0: --num_nodes ${num_nodes} needs --dist_init_method tcp://HOST:PORT (or MASTER_ADDR/MASTER_PORT)" >&2
        exit 1
    fi
fi

# Gradient accumulation without changing the schedule: the same audio per update, the same
# number of updates (ESPnet counts num_iters_per_epoch in mini-batches, not updates).
accum_train_args=""
if [ "${accum_grad}" -gt 1 ]; then
    read -r bins iters < <(python - "${config_iter0}" "${config_iter1}" <<'EOF'
import sys, yaml
confs = [yaml.safe_load(open(path)) for path in sys.argv[1:]]
values = {(c["batch_bins"], c["num_iters_per_epoch"]) for c in confs}
if len(values) != 1:
    sys.exit(f"batch_bins / num_iters_per_epoch differ between {' and '.join(sys.argv[1:])}")
print(*values.pop())
EOF
    )
    accum_train_args="--accum_grad ${accum_grad} --batch_bins $((bins / accum_grad)) --num_iters_per_epoch $((iters * accum_grad))"
fi

# Iteration 0's targets (MFCC k-means) do not depend on the preset: every tag shares them (and
# the shape files) through links into dump/shared, so all presets learn from the same labels.
dumpdir=dump/${tag}
mkdir -p "${dumpdir}" dump/shared
for d in shapes feats_iter0 labels_iter0; do
    mkdir -p "dump/shared/${d}"
    [ -e "${dumpdir}/${d}" ] || ln -s "../shared/${d}" "${dumpdir}/${d}" || [ -e "${dumpdir}/${d}" ]
done

device=cpu  # of the feature extraction of stages 3 and 5 and of the analyses of stage 8
if [ "${ngpu}" -gt 0 ]; then
    device=cuda
fi
all_train_args="${accum_train_args} ${dist_train_args} ${train_args}"

export LIBRISPEECH_ROOT=${librispeech_root}  # read by local/data.sh (stage 1)

./ssl.sh \
    --train_set train_960 \
    --valid_set dev \
    --test_sets "test_clean test_other" \
    --n_clusters_iter0 100 \
    --n_clusters_iter1 500 \
    --feature_layer 6 \
    --kmeans_portion 0.1 \
    --train_config_iter0 "${config_iter0}" \
    --train_config_iter1 "${config_iter1}" \
    --ngpu "${ngpu}" \
    --num_nodes "${num_nodes}" \
    --dist_init_method "${dist_init_method}" \
    --feature_device "${device}" \
    --analysis_device "${device}" \
    --expdir "exp/${tag}" \
    --dumpdir "${dumpdir}" \
    --model_name "librispeech_mamba_hubert_${tag}" \
    --train_args "${all_train_args}" \
    "${ssl_args[@]+"${ssl_args[@]}"}"
