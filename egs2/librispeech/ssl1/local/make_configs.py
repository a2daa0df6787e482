"""Write conf/tuning/train_ssl_iter{0,1}_<preset>.yaml for every preset of espnet_mamba.

The configs differ only in the preset and the iteration (targets, number of classes, number of
updates); this script is where the shared settings live. Edit it, then run it from the recipe
directory (``python local/make_configs.py``); ``--check`` only reports files that differ.

The schedule is the papers' (HuBERT Base's two iterations):
  iteration 0: k-means of MFCC, 100 clusters, 250k updates;
  iteration 1: k-means of hidden state 6 of the iteration-0 model, 500 clusters, 400k updates;
with about a quarter of HuBERT Base's audio per update (paper 1): 700 s, i.e. 87.5 s per GPU
on 8 GPUs. Optimisation is HuBERT Base's (Adam with decoupled weight decay 0.01, betas 0.9/0.98,
eps 1e-6, peak lr 5e-4 after 32k linear warm-up updates, linear decay to 0, gradient clipping
at 10), for every preset and size, as paper 1 pretrains all its models the same way.
"""

import argparse
import sys
from importlib import resources
from pathlib import Path

from espnet_mamba import list_presets
from espnet_mamba.validation import SAMPLE_RATE

SECONDS_PER_UPDATE = 700  # HuBERT Base: 32 GPUs x 87.5 s; paper 1: a quarter of that
ITERS_PER_EPOCH = 5000  # a validation pass and a resumable checkpoint every 5000 updates
WARMUP_UPDATES = 32000
PEAK_LR = 0.0005
ITERATIONS = {
    # iteration: (clusters, updates, what the targets are)
    0: (100, 250_000, "k-means (100 clusters) of 39-d MFCC features"),
    1: (500, 400_000, "k-means (500 clusters) of hidden state 6 of the iteration-0 model"),
}

TEMPLATE = """\
# LibriSpeech 960 h, HuBERT iteration {it} of the papers' schedule: {updates_k}k updates from scratch.
# Targets (predicted on masked frames): {targets}.
# Encoder: {description}
# Written by local/make_configs.py: change that script and re-run it, not this file.
#
# batch_bins is ESPnet's global batch (split over all GPUs): 700 s of audio per update, 87.5 s
# per GPU with --ngpu 8 (a quarter of HuBERT Base's audio per update, as in paper 1).
# Updates = num_iters_per_epoch x max_epoch / accum_grad = {iters} x {epochs} = {updates:,};
# run.sh --accum_grad N divides batch_bins by N and multiplies num_iters_per_epoch by N.
encoder: mamba_hubert
encoder_conf:
    preset: {preset}
    recompute_cnn: true     # the waveform CNN's activations, recomputed in backward, dominate memory
    compile_cnn: false
model: mamba_hubert
input_size: 1               # raw waveform into the encoder: no ESPnet frontend
normalize: null
preencoder: null
loss:
-   name: hubert
    conf:
        num_classes: {classes}     # {clusters} clusters + <unk> (the k-means stage's tokens.txt)
        final_dim: 256
util:
-   name: mask
    conf:
        mask_prob: 0.8
        mask_length: 10
collate_fn_conf:
    label_downsampling: 1
    pad: false
    rand_crop: true         # each batch cut to its shortest utterance, at random offsets
batch_type: numel
batch_bins: {batch_bins}       # 16 kHz samples per update, all GPUs together: {seconds} s
accum_grad: 1
num_iters_per_epoch: {iters}
max_epoch: {epochs}
num_workers: 4
optim: adamw
optim_conf:
    lr: {lr}
    betas:
    - 0.9
    - 0.98
    eps: 0.000001
    weight_decay: 0.01
# No weight decay on biases, norms, embeddings, and Mamba's A_log and D (_no_weight_decay).
exclude_weight_decay: true
# HuBERT's schedule: linear warm-up to the peak in 32k updates, linear decay to 0 at the last
# update (the points are absolute learning rates); the far last point keeps it at 0 afterwards.
scheduler: piecewiselinearwarmuplr
scheduler_conf:
    warmup_steps_list:
    - 0
    - {warmup}
    - {updates}
    - 1000000000
    warmup_lr_list:
    - 0.0
    - {lr}
    - 0.0
    - 0.0
use_amp: true               # ESPnet autocasts to bf16 where the GPU supports it
grad_clip: 10.0
best_model_criterion:
-   - valid
    - loss
    - min
keep_nbest_models: 1
patience: null
log_interval: 200
seed: 0
num_att_plot: 0
use_tensorboard: true
"""


def description(preset: str) -> str:
    """The preset file's first comment line, e.g. 'Causal Mamba Base (paper 1): ...'."""
    first = (resources.files("espnet_mamba.presets") / f"{preset}.yaml").read_text().splitlines()[0]
    return first.lstrip("# ").strip() if first.startswith("#") else preset


def render(preset: str, it: int) -> str:
    clusters, updates, targets = ITERATIONS[it]
    assert updates % ITERS_PER_EPOCH == 0
    return TEMPLATE.format(
        it=it, targets=targets, updates_k=updates // 1000, description=description(preset), preset=preset,
        classes=clusters + 1, clusters=clusters, batch_bins=SECONDS_PER_UPDATE * SAMPLE_RATE,
        seconds=SECONDS_PER_UPDATE, iters=ITERS_PER_EPOCH, epochs=updates // ITERS_PER_EPOCH,
        updates=updates, lr=PEAK_LR, warmup=WARMUP_UPDATES,
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", type=Path, default=Path(__file__).resolve().parents[1] / "conf/tuning")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    args = parser.parse_args()
    differ = []
    for preset in list_presets():
        for it in ITERATIONS:
            path = args.out_dir / f"train_ssl_iter{it}_{preset}.yaml"
            text = render(preset, it)
            if path.exists() and path.read_text() == text:
                continue
            differ.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in differ:
        print(("differs: " if args.check else "wrote: ") + str(path))
    if args.check and differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
