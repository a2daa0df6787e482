# How stages launch their jobs. Empty: run here. For a cluster, set a wrapper that takes the
# command as its arguments, e.g. train_cmd="srun --gres=gpu:1 --time=72:00:00".
export train_cmd=""
