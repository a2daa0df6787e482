"""Kernel-level checks behind design choices of the backbone (CUDA only; docs/benchmarks.md):

sdpa       forward + backward of scaled_dot_product_attention at 1 x 12 heads x 16000 frames
           x 64, bf16, dropout 0.1: with a key-padding mask, without a mask, and causal;
           SDPA's own choice of kernel and each backend forced. Why the attention passes no
           mask when no frame is padding.
scan_rows  mamba-ssm's selective_scan_fn on 32768 frames of E 2304, N 24 (mamba_base at
           640 s), bf16: as one row, and cut into 2-16 rows of a batch. How much of the GPU
           one long row leaves idle.
chunked_scan
           our Triton chunked scan (time-major) against mamba-ssm's scan at E 2304, N 24,
           bf16, batch 1, 512-32768 frames, over chunk sizes, channel blocks and warps:
           time, and the largest difference from mamba-ssm's output.
chunked_scan_profile
           for a profiler: our chunked scan's forward at 1 x 32768 frames (E 2304, N 24, bf16;
           B and C slices of one tensor, as in the mixer) five times, then its forward and
           backward at 8 x 750 five times. E.g. the two passes and the chain of the fifth
           forward, and the backward's two sweeps of the last training call:
           ncu --clock-control none --set full -k regex:'_scan_chunks|_chain_chunks'
               --launch-skip 12 --launch-count 3 python tools/gpu_micro.py chunked_scan_profile
           ncu --clock-control none --set full -k regex:'_adjoint_chunks|_grad_chunks'
               --launch-skip 8 --launch-count 2 python tools/gpu_micro.py chunked_scan_profile
chunked_scan_train
           the same with autograd, at 8 x 750 and 1 x 16000 frames (mamba_base's training
           shapes at 8 x 15 s and 320 s): forward and forward + backward of mamba-ssm's scan
           against ours over chunk sizes, and the largest gradient difference from mamba-ssm's.
pos_conv   HuBERT's positional conv (768 channels, 16 groups, 128 taps) + GELU at 500-32000
           frames: cuDNN in float32 (TF32) against our Triton kernel in bfloat16 over frame
           blocks, warps and pipeline stages; the largest difference from cuDNN without TF32.
           Then forward + backward at 8 x 749 and 1 x 16000 frames, cuDNN against Triton.
dw_conv    Mamba's depthwise causal conv + SiLU (E 2304, 4 taps), bf16, time-major as the
           chunked-scan mixer runs it: at 1 x 32768 frames (inference) and 8 x 750 and
           1 x 16000 (forward + backward), our Triton kernel over frame and channel blocks
           against causal-conv1d's channel-last kernel and our PyTorch code.
cnn_conv   the waveform CNN's first four layers with LayerNorm and GELU, bf16, at 8 x 15 s and
           1 x 320 s: the product over unfolded windows against cuDNN's NHWC conv2d, forward
           and forward + backward.
cnn_norm   the causal CNN's LayerNorm + GELU on a bf16 conv output of 512 channels, at
           8 x 47999 frames (layer 1 at 8 x 15 s) and 1 x 1023999 (at 320 s): PyTorch's ops
           under autocast against our Triton kernel, forward and forward + backward, and the
           largest differences of output and input gradient.
cnn_first  the causal CNN's first layer (1 -> 512 channels, kernel 10, stride 5) with its
           LayerNorm + GELU in inference, bf16 autocast, at 1 x 640 s and 8 x 15 s: ConvLayer's
           eager path (unfolded product, then the LayerNorm + GELU kernel) against the one
           kernel that convolves the waveform itself, and their largest differences from float64.
cnn_segments
           the whole waveform CNN in inference (causal LayerNorm and HuBERT's GroupNorm modes),
           bf16 autocast, at 1 x 640 s and 8 x 15 s, over the size of the time segments its
           frame-wise layers run in (``FeatureExtractor.segment_frames``; one pass first):
           time, peak memory, and the largest difference from the one pass.

    python tools/gpu_micro.py sdpa scan_rows chunked_scan chunked_scan_train pos_conv dw_conv cnn_conv cnn_norm \
        cnn_first cnn_segments
"""

import functools
import itertools
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from espnet_mamba.bin.profile_parts import cuda_ms, kernel_table


def sdpa() -> None:
    frames = 16000
    q, k, v = (torch.randn(1, 12, frames, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    key_mask = torch.ones(1, 1, 1, frames, dtype=torch.bool, device="cuda")
    calls = {"key-padding mask": dict(attn_mask=key_mask), "no mask": {}, "is_causal": dict(is_causal=True)}
    print("| attention call | backend | fwd + bwd ms | peak MiB |\n|---|---|---|---|")
    for name, kwargs in calls.items():
        for backend in (None, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            def step():
                F.scaled_dot_product_attention(q, k, v, dropout_p=0.1, **kwargs).sum().backward()

            torch.cuda.reset_peak_memory_stats()
            label = "SDPA's choice" if backend is None else backend.name
            try:
                if backend is None:
                    ms = cuda_ms(step, repeat=5)
                else:
                    with sdpa_kernel(backend):
                        ms = cuda_ms(step, repeat=5)
            except RuntimeError as error:
                print(f"| {name} | {label} | fails: {str(error).splitlines()[0][:60]} | |")
                continue
            print(f"| {name} | {label} | {ms:.2f} | {torch.cuda.max_memory_allocated() >> 20} |")


def scan_rows() -> None:
    from espnet_mamba.ops import mamba_kernels

    scan = mamba_kernels()["selective_scan_fn"]
    channels, states, frames = 2304, 24, 32768
    A = -torch.rand(channels, states, device="cuda")
    D, delta_bias = torch.ones(channels, device="cuda"), torch.rand(channels, device="cuda")
    print("| rows x frames | ms |\n|---|---|")
    for rows in (1, 2, 4, 8, 16):
        u = torch.randn(rows, channels, frames // rows, device="cuda", dtype=torch.bfloat16)
        delta = torch.rand_like(u) * 0.1
        B = torch.randn(rows, states, frames // rows, device="cuda", dtype=torch.bfloat16)
        C = torch.randn_like(B)
        ms = cuda_ms(lambda: scan(u, delta, A, B, C, D, z=u, delta_bias=delta_bias, delta_softplus=True), repeat=5)
        print(f"| {rows} x {frames // rows} | {ms:.3f} |")


def _scan_parameters(channels: int, states: int):
    """A (E, N), negative, with decays spread over three decades; D (E,); delta_bias (E,) such that
    softplus(delta + delta_bias) is a small step, as in a trained Mamba."""
    A = -torch.exp(torch.rand(channels, states, device="cuda") * 3)
    return A, torch.ones(channels, device="cuda"), torch.rand(channels, device="cuda") - 4


def chunked_scan() -> None:
    from espnet_mamba.ops import chunked_selective_scan, mamba_kernels

    scan = mamba_kernels()["selective_scan_fn"]
    channels, states = 2304, 24
    A, D, delta_bias = _scan_parameters(channels, states)
    print("| frames | kernel | chunk | block_e | warps | ms | max abs diff / max abs |\n|---|---|---|---|---|---|---|")
    for frames in (512, 2048, 4096, 8192, 32768):
        u, delta, z = (torch.randn(1, frames, channels, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        x_dbl = torch.randn(1, frames, 2 * states, device="cuda", dtype=torch.bfloat16)
        B, C = x_dbl.split([states, states], -1)
        major = [t.transpose(1, 2).contiguous() for t in (u, delta, B, C, z)]  # (batch, E or N, L)

        def mamba_ssm():
            return scan(major[0], major[1], A, major[2], major[3], D, z=major[4], delta_bias=delta_bias,
                        delta_softplus=True)

        ref = mamba_ssm().transpose(1, 2).float()
        print(f"| {frames} | mamba-ssm | | | | {cuda_ms(mamba_ssm, repeat=5):.3f} | |")
        results = []
        shapes = ((32, 1), (64, 1), (64, 2), (128, 4))  # (block_e, warps)
        for chunk, (block_e, warps) in itertools.product((32, 64, 128, 256, 512), shapes):
            def ours():
                return chunked_selective_scan(u, delta, A, B, C, D, z, delta_bias, chunk_size=chunk,
                                              block_e=block_e, num_warps=warps)[0]

            err = ((ours().float() - ref).abs().max() / ref.abs().max()).item()
            results.append((cuda_ms(ours, repeat=5), chunk, block_e, warps, err))
        for ms, chunk, block_e, warps, err in sorted(results)[:5]:
            print(f"| {frames} | chunked | {chunk} | {block_e} | {warps} | {ms:.3f} | {err:.1e} |")
        print(f"| {frames} | chunked, worst error of all configs | | | | | {max(r[-1] for r in results):.1e} |")
    _, chunk, block_e, warps, _ = min(results)
    print(kernel_table(lambda: chunked_selective_scan(u, delta, A, B, C, D, z, delta_bias, chunk_size=chunk,
                                                      block_e=block_e, num_warps=warps), top=5))


def chunked_scan_profile() -> None:
    from espnet_mamba.ops import chunked_selective_scan

    channels, states = 2304, 24
    A, D, delta_bias = _scan_parameters(channels, states)
    for batch, frames, train in ((1, 32768, False), (8, 750, True)):
        options = dict(device="cuda", dtype=torch.bfloat16, requires_grad=train)
        u, delta, z = (torch.randn(batch, frames, channels, **options) for _ in range(3))
        x_dbl = torch.randn(batch, frames, 48 + 2 * states, **options)  # dt's rank, then B and C, as in the mixer
        B, C = x_dbl[..., 48:].split([states, states], -1)
        for _ in range(5):
            y, _ = chunked_selective_scan(u, delta, A, B, C, D, z, delta_bias)
            if train:
                y.backward(torch.ones_like(y))
        print(f"{batch} x {frames}: mean |y| {y.float().abs().mean().item():.4f}")


def chunked_scan_train() -> None:
    from espnet_mamba.ops import chunked_selective_scan, mamba_kernels
    from espnet_mamba.ops.chunked_scan import train_chunk_size

    scan = mamba_kernels()["selective_scan_fn"]
    channels, states = 2304, 24
    A, D, delta_bias = _scan_parameters(channels, states)
    print("| batch x frames | kernel | chunk | fwd ms (no autograd) | fwd + bwd ms | worst grad diff / max abs |\n"
          "|---|---|---|---|---|---|")
    for batch, frames in ((8, 750), (1, 16000)):
        u, z = (torch.randn(batch, frames, channels, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        delta = torch.randn(batch, frames, channels, device="cuda", dtype=torch.bfloat16) + 2
        x_dbl = torch.randn(batch, frames, 2 * states, device="cuda", dtype=torch.bfloat16)
        dout = torch.randn(batch, frames, channels, device="cuda", dtype=torch.bfloat16)
        params = [t.clone().requires_grad_() for t in (A, D, delta_bias)]
        time_major = [t.clone().requires_grad_() for t in (u, delta, z, x_dbl)]  # ours: (batch, L, E or 2N)
        B, C = x_dbl.split([states, states], -1)
        channel_major = [t.transpose(1, 2).contiguous().requires_grad_() for t in (u, delta, z, B, C)]

        def mamba_ssm():
            u_, delta_, z_, B_, C_ = channel_major
            return scan(u_, delta_, params[0], B_, C_, params[1], z=z_, delta_bias=params[2],
                        delta_softplus=True).transpose(1, 2)

        def ours(chunk):
            B_, C_ = time_major[3].split([states, states], -1)
            return chunked_selective_scan(time_major[0], time_major[1], params[0], B_, C_, params[1], time_major[2],
                                          params[2], chunk_size=chunk)[0]

        def grads(forward):
            """Gradients of u, delta, z, B, C (batch, L, E or N), A, D, delta_bias, in float32."""
            for t in time_major + channel_major + params:
                t.grad = None
            forward().backward(dout)
            if time_major[0].grad is None:
                data = [t.grad.transpose(1, 2) for t in channel_major]
            else:
                data = [t.grad for t in time_major[:3]] + list(time_major[3].grad.split([states, states], -1))
            return [g.float() for g in data + [t.grad for t in params]]

        reference = grads(mamba_ssm)
        for name, chunk, forward in [("mamba-ssm", "", mamba_ssm)] + [
                ("chunked", c, lambda c=c: ours(c)) for c in (32, 64, 128, 256)]:
            err = max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(grads(forward), reference))
            with torch.no_grad():
                fwd_ms = cuda_ms(forward, repeat=10)
            step_ms = cuda_ms(lambda: forward().backward(dout), repeat=10)
            label = f"{chunk}{' (default)' if chunk == train_chunk_size(frames) else ''}"
            print(f"| {batch} x {frames} | {name} | {label} | {fwd_ms:.3f} | {step_ms:.3f} | {err:.1e} |")


def pos_conv() -> None:
    from espnet_mamba.ops import grouped_conv1d

    channels, groups, taps = 768, 16, 128
    weight = torch.randn(channels, channels // groups, taps, device="cuda") * (4 / (taps * channels)) ** 0.5
    bias = torch.randn(channels, device="cuda") * 0.1
    print("| frames | kernel | block_t | warps | stages | ms | max abs diff / max abs |\n|---|---|---|---|---|---|---|")
    for frames in (500, 8000, 32000):
        x = torch.randn(1, frames + taps - 1, channels, device="cuda")

        def cudnn():
            return F.gelu(F.conv1d(x.transpose(1, 2), weight, bias, groups=groups))

        torch.backends.cudnn.allow_tf32 = False
        ref = cudnn().transpose(1, 2)
        torch.backends.cudnn.allow_tf32 = True
        err = ((cudnn().transpose(1, 2) - ref).abs().max() / ref.abs().max()).item()
        print(f"| {frames} | cuDNN float32 (TF32) | | | | {cuda_ms(cudnn, repeat=5):.3f} | {err:.1e} |")
        x16, results = x.bfloat16(), []
        for block_t, warps, stages in itertools.product((64, 128, 256), (4, 8), (2, 3, 4)):
            def ours():
                return F.gelu(grouped_conv1d(x16, weight, bias, groups, block_t=block_t, num_warps=warps,
                                             num_stages=stages))

            try:
                err = ((ours() - ref).abs().max() / ref.abs().max()).item()
            except Exception as error:  # e.g. out of shared memory for this config
                print(f"| {frames} | triton bf16 | {block_t} | {warps} | {stages} | fails: {str(error)[:50]} | |")
                continue
            results.append((cuda_ms(ours, repeat=5), block_t, warps, stages, err))
        for ms, block_t, warps, stages, err in sorted(results)[:4]:
            print(f"| {frames} | triton bf16 | {block_t} | {warps} | {stages} | {ms:.3f} | {err:.1e} |")
    print("\n| batch x frames | forward + backward | ms |\n|---|---|---|")
    for batch, frames in ((8, 749), (1, 16000)):
        x = torch.randn(batch, frames + taps - 1, channels, device="cuda", requires_grad=True)
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        grad = torch.randn(batch, frames, channels, device="cuda")
        runs = {
            "cuDNN float32 (TF32)": lambda: F.gelu(F.conv1d(x.transpose(1, 2), w, b, groups=groups)).transpose(1, 2),
            "triton bf16": lambda: F.gelu(grouped_conv1d(x.bfloat16(), w, b, groups)),
        }
        for name, run in runs.items():
            print(f"| {batch} x {frames} | {name} | {cuda_ms(lambda: run().backward(grad), repeat=5):.3f} |")


def dw_conv() -> None:
    from espnet_mamba.ops import causal_conv1d, mamba_kernels
    from espnet_mamba.ops.depthwise_conv import depthwise_conv1d_silu

    channels = 2304
    theirs = (mamba_kernels() or {}).get("causal_conv1d_fn")
    print("| batch x frames | conv | block_t | block_c | forward ms | forward + backward ms | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for batch, frames in ((1, 32768), (8, 750), (1, 16000)):
        x = torch.randn(batch, frames, channels, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        weight = (0.5 * torch.randn(channels, 4, device="cuda")).requires_grad_()
        bias = torch.randn(channels, device="cuda").requires_grad_()
        grad = torch.randn(batch, frames, channels, device="cuda", dtype=torch.bfloat16)
        ref = causal_conv1d(x.float().transpose(1, 2), weight, bias, impl="torch")[0].transpose(1, 2)
        runs = {("PyTorch", "", ""): lambda: causal_conv1d(x.transpose(1, 2), weight, bias, impl="torch")[0].mT}
        if theirs is not None:
            runs["causal-conv1d", "", ""] = lambda: theirs(x.transpose(1, 2), weight, bias, activation="silu").mT
        for block_t, block_c in ((16, 256), (32, 128), (64, 64), (64, 128)):  # larger ones spill registers
            runs["triton", block_t, block_c] = functools.partial(
                depthwise_conv1d_silu, x, weight, bias, block_t=block_t, block_c=block_c)
        for (name, block_t, block_c), run in runs.items():
            def forward():
                with torch.no_grad():
                    return run()

            out = forward()
            err = (out.float() - ref).abs().max().item()
            train = cuda_ms(lambda: run().backward(grad), repeat=10)
            print(f"| {batch} x {frames} | {name} | {block_t} | {block_c} | {cuda_ms(forward, repeat=10):.3f} "
                  f"| {train:.3f} | {err:.1e} |")


def cnn_conv() -> None:
    """The waveform CNN's layers 1-4 (LayerNorm and GELU included), bf16 autocast, at the
    sizes of 8 x 15 s and 1 x 320 s: the product over unfolded windows against cuDNN's NHWC
    conv2d on the (batch, C, 1, L) view of the channels-last input."""

    def unfolded(x, w, stride):
        return F.linear(x.unfold(1, w.shape[-1], stride).flatten(2), w.flatten(1))

    def nhwc(x, w, stride):
        return F.conv2d(x.transpose(1, 2).unsqueeze(2), w.unsqueeze(2), stride=(1, stride)).squeeze(2).transpose(1, 2)

    print("| batch x input frames | C_in, kernel, stride | conv | forward ms | forward + backward ms |\n|---|---|---|---|---|")
    for batch, seconds in ((8, 15), (1, 320)):
        length = seconds * 16000
        for c_in, kernel, stride in ((1, 10, 5), (512, 3, 2), (512, 3, 2), (512, 3, 2)):
            x = torch.randn(batch, length, c_in, device="cuda", requires_grad=True)
            w = (torch.randn(512, c_in, kernel, device="cuda") / (c_in * kernel) ** 0.5).requires_grad_()
            for name, conv in (("unfolded product", unfolded), ("cuDNN NHWC conv2d", nhwc)):
                def forward():
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        return F.gelu(F.layer_norm(conv(x, w, stride), (512,)))

                def inference():
                    with torch.no_grad():
                        forward()

                ms = cuda_ms(inference, repeat=5), cuda_ms(lambda: forward().float().square().mean().backward(), repeat=5)
                print(f"| {batch} x {length} | {c_in}, {kernel}, {stride} | {name} | {ms[0]:.3f} | {ms[1]:.3f} |")
            length = (length - kernel) // stride + 1


def cnn_norm() -> None:
    from espnet_mamba.ops import layer_norm_gelu

    def pytorch(x, w, b):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return F.gelu(F.layer_norm(x, (512,), w, b)).to(x.dtype)  # ConvLayer's cast for the next conv

    print("| batch x frames | LayerNorm + GELU | forward ms | forward + backward ms | max abs diff: y, dx |")
    print("|---|---|---|---|---|")
    for batch, frames in ((8, 47999), (1, 1023999)):
        x = (3 * torch.randn(batch, frames, 512, device="cuda") + 1).to(torch.bfloat16).requires_grad_()
        w, b = (1 + 0.3 * torch.randn(512, device="cuda")).requires_grad_(), torch.randn(512, device="cuda")
        b.requires_grad_()
        grad = torch.randn_like(x)
        results = {}
        for name, run in (("PyTorch (autocast)", pytorch), ("ours (Triton)", layer_norm_gelu)):
            def forward():
                with torch.no_grad():
                    return run(x, w, b)

            y = forward()
            dx, = torch.autograd.grad(run(x, w, b), x, grad)
            results[name] = y.float(), dx.float()
            train = cuda_ms(lambda: torch.autograd.grad(run(x, w, b), (x, w, b), grad), repeat=10)
            diff = [(a - r).abs().max().item() for a, r in zip(results[name], results["PyTorch (autocast)"])]
            print(f"| {batch} x {frames} | {name} | {cuda_ms(forward, repeat=10):.3f} | {train:.3f} "
                  f"| {diff[0]:.1e}, {diff[1]:.1e} |")


def cnn_first() -> None:
    from espnet_mamba.nn.feature_extractor import ConvLayer

    torch.manual_seed(0)
    layer = ConvLayer(1, 512, 10, 5, "layer_norm", bias=False).cuda()
    with torch.no_grad():
        layer.layer_norm.weight.add_(0.3 * torch.randn(512, device="cuda"))
        layer.layer_norm.bias.add_(0.3 * torch.randn(512, device="cuda"))
    print("| batch x samples | first layer | forward ms | largest difference of y from float64, relative |\n"
          "|---|---|---|---|")
    for batch, samples in ((1, 640 * 16000), (8, 15 * 16000)):
        wav = torch.randn(batch, samples, 1, device="cuda")
        with torch.no_grad():
            weight = layer.conv.weight.double()
            norm = [p.double() for p in (layer.layer_norm.weight, layer.layer_norm.bias)]
            reference = F.gelu(F.layer_norm(F.conv1d(wav.double().transpose(1, 2), weight, stride=5).transpose(1, 2),
                                            (512,), *norm))  # fmt: skip
        for name, grad_mode in (("eager: product, then LayerNorm + GELU kernel", True), ("one kernel", False)):
            x = wav.clone().requires_grad_(grad_mode)  # under autograd the eager layer runs

            def forward():
                with torch.set_grad_enabled(grad_mode), torch.autocast("cuda", dtype=torch.bfloat16):
                    return layer(x).detach()

            with torch.set_grad_enabled(grad_mode):
                assert layer._runs_waveform_kernel(x) is not grad_mode
            diff = ((forward().double() - reference).abs().max() / reference.abs().max()).item()
            print(f"| {batch} x {samples} | {name} | {cuda_ms(forward, repeat=10):.3f} | {diff:.1e} |")


def cnn_segments() -> None:
    from espnet_mamba.benchmarking import PeakMemory
    from espnet_mamba.nn.feature_extractor import FeatureExtractor

    print("| CNN | batch x s | segment frames | forward ms | peak MiB | largest difference from one pass, relative |\n"
          "|---|---|---|---|---|---|")  # fmt: skip
    for mode in ("layer_norm", "group_norm"):
        torch.manual_seed(0)
        cnn = FeatureExtractor(mode).cuda()
        for batch, seconds in ((1, 640), (8, 15)):
            wav = 0.1 * torch.randn(batch, seconds * 16000, device="cuda")
            one_pass = None
            for frames in (2**40, 8192, 4096, 2048, 1024, 512):
                cnn.segment_frames = frames

                def forward():
                    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                        return cnn(wav)[0]

                with PeakMemory(torch.device("cuda")) as memory:
                    y = forward()
                one_pass = y if one_pass is None else one_pass
                diff = ((y.float() - one_pass.float()).abs().max() / one_pass.float().abs().max()).item()
                del y
                name = "one pass" if frames == 2**40 else frames
                print(f"| {mode} | {batch} x {seconds} | {name} | {cuda_ms(forward, repeat=10):.3f} | {memory.peak_mib:.0f} | "
                      f"{diff:.1e} |")  # fmt: skip
            del one_pass


if __name__ == "__main__":
    checks = {"sdpa": sdpa, "scan_rows": scan_rows, "chunked_scan": chunked_scan,
              "chunked_scan_profile": chunked_scan_profile, "chunked_scan_train": chunked_scan_train,
              "pos_conv": pos_conv, "dw_conv": dw_conv, "cnn_conv": cnn_conv, "cnn_norm": cnn_norm,
              "cnn_first": cnn_first, "cnn_segments": cnn_segments}
    for name in sys.argv[1:] or checks:
        if name not in checks:
            raise SystemExit(f"unknown check {name!r}; choose from {sorted(checks)}")
        checks[name]()
