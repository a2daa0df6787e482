"""The benchmark: MAC counting, timing loop, OOM handling, reports and the CLI (tiny, CPU);
and tools/export_code.sh, which puts old code beside new for A/B timings."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from espnet_mamba import benchmarking
from espnet_mamba.benchmarking import BenchmarkSpec, Setting
from espnet_mamba.bin import benchmark as cli
from espnet_mamba.ops import mamba_kernels

from conftest import TINY_CNN

REPO = Path(__file__).resolve().parents[1]
TINY = dict(d_model=64, num_layers=2, heads=4, conv_layers=TINY_CNN, ffn_dim=128, final_dim=32, num_classes=20)
TINY_ARGS = [f"--override={k}={json.dumps(v)}" for k, v in TINY.items()]


@pytest.fixture(autouse=True)
def one_thread():
    """One CPU thread: steadier and faster where other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def table_rows(markdown: str):
    """The rows of a Markdown table as dicts keyed by the header."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_cli_tiny_cpu(tmp_path, capsys):
    out = tmp_path / "bench"
    cli.main(["--presets", "mamba_small,transformer_small", "--seconds", "0.5,1", "--device", "cpu",
              "--warmup", "1", "--repeat", "2", "--ratio_to", "transformer_small", "--output_dir", str(out),
              *TINY_ARGS])  # fmt: skip
    rows = table_rows(capsys.readouterr().out)
    assert sorted((r["preset"], r["audio s"]) for r in rows) == [
        ("mamba_small", "0.5"), ("mamba_small", "1"), ("transformer_small", "0.5"), ("transformer_small", "1"),
    ]  # fmt: skip
    for r in rows:
        assert r["status"] == "ok"
        for column in ("matmul GMAC (FlopCounterMode)", "GMAC / audio s", "time ms (median)", "RTF",
                       "transformer_small time / time"):  # fmt: skip
            value = float(r[column])
            assert math.isfinite(value) and value > 0, (column, r)
    assert all(float(r["transformer_small time / time"]) == 1 for r in rows if r["preset"] == "transformer_small")
    assert all(float(r["scan GMAC (analytic)"]) > 0 for r in rows if r["preset"] == "mamba_small")

    assert (out / "benchmark.md").read_text().count("| mamba_small |") == 2
    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    height, width = matplotlib.image.imread(out / "benchmark.png").shape[:2]
    assert (height, width) == (540, 1440)  # 12 x 4.5 inches at 120 dpi
    raw = json.loads((out / "benchmark.json").read_text())
    assert raw["environment"]["device"] == "cpu" and len(raw["results"]) == 4
    # which kernels ran is part of every report: "none" where mamba-ssm is not installed (CI)
    assert (raw["environment"]["mamba_kernels"] == "none") == (mamba_kernels() is None)
    assert raw["environment"]["triton"]
    macs = {(r["preset"], r["seconds"]): r["matmul_macs"] for r in raw["results"]}
    for preset in ("mamba_small", "transformer_small"):
        assert 1.9 < macs[(preset, 1.0)] / macs[(preset, 0.5)] < 2.2  # linear in length, CNN edges aside
    assert len((out / "benchmark.tsv").read_text().splitlines()) == 5


def test_cli_moves_the_chunked_scan_threshold_for_its_run_only(tmp_path, monkeypatch):
    from espnet_mamba.ops import backend

    default, seen = backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES, []

    def run(spec, log):
        seen.append(backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES)
        return benchmarking.run_benchmark(spec, log)

    monkeypatch.setattr(cli, "run_benchmark", run)
    cli.main(["--presets", "mamba_small", "--seconds", "0.5", "--device", "cpu", "--warmup", "0", "--repeat", "1",
              "--chunked_scan_min_train_frames", "0", "--output_dir", str(tmp_path), *TINY_ARGS])  # fmt: skip
    assert seen == [0] and backend.CHUNKED_SCAN_MIN_TRAIN_FRAMES == default


def test_macs_per_second_flat_for_mamba_and_growing_for_attention():
    """The efficiency claim of the Mamba-HuBERT paper, at full size (counted on meta)."""
    per_second = {}
    for preset in ("mamba_base", "transformer_base"):
        meta = benchmarking.meta_model(preset, {})
        for seconds in (10, 320):
            matmul, scan = benchmarking.offline_macs(meta, Setting("infer", seconds))
            per_second[preset, seconds] = (matmul + scan) / seconds
    assert per_second["mamba_base", 320] / per_second["mamba_base", 10] == pytest.approx(1, abs=0.01)
    assert per_second["transformer_base", 320] / per_second["transformer_base", 10] > 2


@pytest.mark.parametrize("preset, directions", [("mamba_small", 1), ("extbimamba_small", 2), ("transformer_small", 0)])
def test_scan_macs_are_analytic_per_direction(preset, directions):
    meta = benchmarking.meta_model(preset, TINY)
    cfg = meta.cfg
    frames = 49  # 1 s at 16 kHz through HuBERT's CNN
    per_scan = benchmarking.selective_scan_macs(2, int(cfg.expand * cfg.d_model), frames, cfg.d_state)
    _, infer = benchmarking.offline_macs(meta, Setting("infer", 1.0, batch=2))
    _, train = benchmarking.offline_macs(meta, Setting("train", 1.0, batch=2))
    assert infer == directions * cfg.num_layers * per_scan
    assert train == 3 * infer


def test_grouped_conv_backward_counts_each_group_once():
    conv = torch.nn.Conv1d(64, 64, 4, groups=64)
    x = torch.randn(2, 64, 50, requires_grad=True)
    with benchmarking.count_macs() as forward:
        conv(x)
    with benchmarking.count_macs() as both:
        conv(x).sum().backward()
    assert forward.matmul == 2 * 47 * 64 * 4  # batch x output frames x channels x kernel
    assert both.matmul == 3 * forward.matmul  # input gradient and weight gradient: a forward each
    with FlopCounterMode(display=False) as torch_count:
        conv(x).sum().backward()
    assert torch_count.get_total_flops() // 2 > both.matmul  # torch's own formula: groups x too much


def test_stream_macs_match_offline_and_latency_is_measured():
    presets = ["mamba_small", "causal_transformer_small", "transformer_small"]
    settings = [Setting("stream", 1.0), Setting("infer", 1.0)]
    spec = BenchmarkSpec(presets, settings, overrides=TINY, repeat=1, warmup=0)
    results = {(r.preset, r.mode): r for r in benchmarking.run_benchmark(spec)}
    for preset in ("mamba_small", "causal_transformer_small"):
        stream, offline = results[preset, "stream"], results[preset, "infer"]
        assert stream.status == "ok" and 0 < stream.step_ms <= stream.step_p90_ms
        assert stream.time_s > 0 and stream.mac_window_s == pytest.approx(0.1)
        # a step costs what its frame costs offline (the offline forward is 49 frames long)
        assert stream.macs_per_second == pytest.approx(offline.macs_per_second, rel=0.05)
    assert results["transformer_small", "stream"].status == "n/a"
    assert results["transformer_small", "stream"].time_s is None


def test_oom_is_reported_and_longer_audio_skipped(monkeypatch):
    calls = []

    def runs_out_after_first(fn, device, warmup, repeat):
        calls.append(1)
        if len(calls) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return [0.5, 0.25, 0.75]

    monkeypatch.setattr(benchmarking, "time_calls", runs_out_after_first)
    spec = BenchmarkSpec(["mamba_small", "transformer_small"], [Setting("infer", 1.0), Setting("infer", 0.5)],
                         overrides=TINY)  # fmt: skip
    results = benchmarking.run_benchmark(spec)
    got = [(r.preset, r.seconds, r.status, r.time_s) for r in results]
    assert got == [("mamba_small", 0.5, "ok", 0.5), ("mamba_small", 1.0, "OOM", None),
                   ("transformer_small", 0.5, "OOM", None), ("transformer_small", 1.0, "OOM", None)]  # fmt: skip
    assert len(calls) == 3  # the 1 s run of transformer_small was not attempted
    assert results[3].note == "not run: OOM at 0.5 s"
    assert all(r.matmul_macs > 0 for r in results[:3])  # MACs are counted even where time is OOM
    rows = table_rows(benchmarking.markdown_table(results, "transformer_small"))
    assert [r["status"].split()[0] for r in rows] == ["ok", "OOM", "OOM", "OOM"]
    assert rows[1]["time ms (median)"] == "–"


def test_state_signature_is_steady_for_mamba_and_fixed_capacity_caches(tiny_model):
    """What a CUDA graph of a stream step needs: a state that keeps its shapes."""
    chunk = 0.1 * torch.randn(1, 320)
    for preset, max_frames, steady in (("mamba_small", None, True), ("causal_transformer_small", None, False),
                                       ("causal_transformer_small", 50, True)):  # fmt: skip
        model = tiny_model(preset)
        state = model.init_stream(1, max_frames=max_frames)
        signatures = []
        for _ in range(6):
            _, state = model.stream(chunk, state)
            signatures.append(benchmarking.state_signature(state))
        assert (signatures[-1] == signatures[-2]) is steady
        copy = benchmarking.map_tensors(state, torch.clone)
        assert benchmarking.state_signature(copy) == signatures[-1]
        assert all(a is not b and torch.equal(a, b) for a, b in zip(benchmarking.tensors_of(copy),
                                                                    benchmarking.tensors_of(state)))  # fmt: skip


@pytest.mark.parametrize("build, message", [
    (lambda: Setting("fast", 1.0), "mode must be"),
    (lambda: Setting("infer", 0.01), "shorter than one frame"),
    (lambda: Setting("infer", 1.0, dtype="float16"), "dtype must be"),
    (lambda: BenchmarkSpec(["mamba_tiny"], [Setting("infer", 1.0)]), "unknown or no presets"),
    (lambda: BenchmarkSpec(["mamba_small"], [Setting("stream", 1.0)], chunk_ms=30), "whole number"),
    (lambda: BenchmarkSpec(["mamba_small"], [Setting("stream", 1.0)], chunk_ms=0.01), "whole number"),
    (lambda: BenchmarkSpec(["mamba_small"], [Setting("infer", 1.0)], cuda_graphs=True), "cuda_graphs needs"),
    (lambda: cli.main(["--presets", "mamba_small", "--ratio_to", "transformer_small"]), "--ratio_to"),
    (lambda: cli.main(["--presets", "mamba_small", "--seconds", "1,two"]), "--seconds"),
])  # fmt: skip
def test_bad_input_raises_value_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_random_audio_is_noise_not_silence():
    audio = benchmarking.random_audio(2, 16000, "cpu", seed=3)
    assert audio.shape == (2, 16000) and 0.05 < audio.std() < 0.2
    assert torch.equal(audio, benchmarking.random_audio(2, 16000, "cpu", seed=3))


@pytest.mark.slow
def test_brief_command_runs(tmp_path):
    """The example command of the issue, as written (about 1-2 minutes on 2 CPU cores)."""
    command = [sys.executable, "-m", "espnet_mamba.bin.benchmark", "--presets", "mamba_small,transformer_small",
               "--seconds", "1,2", "--device", "cpu", "--output_dir", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    assert len([r for r in table_rows(done.stdout) if r["status"] == "ok"]) == 4
    assert (tmp_path / "benchmark.png").exists()


def test_profile_kernel_table_ranks_ops_by_time():
    from torch.profiler import ProfilerActivity

    from espnet_mamba.bin.profile_parts import kernel_table

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    table = kernel_table(lambda: [a @ b for _ in range(20)] + [a + b], top=3, activities=[ProfilerActivity.CPU])
    lines = table.splitlines()
    assert lines[0].startswith("| kernel | ms | calls | share of") and len(lines) == 2 + 3
    assert "`aten::mm` |" in lines[2] and "| 20 |" in lines[2]  # 20 products outweigh one add


def test_profile_op_table_tells_calls_apart_by_input_shape():
    from torch.profiler import ProfilerActivity

    from espnet_mamba.bin.profile_parts import op_table

    big, small = torch.randn(512, 512), torch.randn(8, 8)
    table = op_table(lambda: [big @ big for _ in range(5)] + [small @ small for _ in range(50)], top=100,
                     activities=[ProfilerActivity.CPU])
    lines = table.splitlines()
    assert lines[0].startswith("| op (input shapes) | ms | calls |")
    assert "`aten::mm` [[512, 512], [512, 512]]" in lines[2] and "| 5 |" in lines[2]  # 5 large outweigh 50 small
    # The small products have a row of their own, wherever the host's per-call overheads rank it.
    small_mm = [line for line in lines if line.startswith("| `aten::mm` [[8, 8], [8, 8]] |")]
    assert len(small_mm) == 1 and "| 50 |" in small_mm[0]


def test_profile_host_ms_is_the_median_time_to_return(monkeypatch):
    from espnet_mamba.bin import profile_parts

    clock = [0.0]
    monkeypatch.setattr(profile_parts.time, "perf_counter", lambda: clock[0])
    pauses = iter([0.2] + [0.01] * 4 + [0.05] * 3)  # a slow warm-up call, then 4 short and 3 long

    def call():
        clock[0] += next(pauses)

    ms = profile_parts.host_ms(call, repeat=7)
    # the median of the 7 after the warm-up: 10 ms (their mean is 27)
    assert next(pauses, None) is None and ms == pytest.approx(10.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_profile_counts_the_kernels_of_a_call():
    from espnet_mamba.bin.profile_parts import device_work

    x = torch.zeros(1 << 20, device="cuda")
    launches, ms = device_work(lambda: [x.add_(1) for _ in range(3)])
    assert launches == 3 and ms > 0 and torch.all(x == 3)


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="tools/export_code.sh reads commits: needs a git checkout")
def test_export_code_gives_an_importable_copy_of_a_commit(tmp_path):
    # the A/B helper: old code in a folder of its own, presets as plain files, imported first from there
    old = tmp_path / "old"
    done = subprocess.run([str(REPO / "tools/export_code.sh"), "HEAD", str(old)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not (old / "espnet_mamba/presets").is_symlink()
    probe = ("import espnet_mamba, s3prl_upstream; print(espnet_mamba.__file__); "
             "print(espnet_mamba.load_config('mamba_base').num_layers)")
    path = os.pathsep.join(filter(None, [str(old), os.environ.get("PYTHONPATH")]))  # keep where the deps are
    ran = subprocess.run([sys.executable, "-c", probe], cwd=old, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": path})  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    module_file, layers = ran.stdout.split()
    assert Path(module_file).is_relative_to(old) and int(layers) == 12
    again = subprocess.run([str(REPO / "tools/export_code.sh"), "HEAD", str(old)], capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr
