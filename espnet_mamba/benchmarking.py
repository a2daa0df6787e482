"""What a forward, a training step or a stream of a preset costs: MACs, wall time, peak
memory and real-time factor, measured for several presets side by side in one process.

MACs are counted once per (preset, setting) on a copy of the model on the meta device (shapes
only, no data, any length in a second), with the PyTorch Mamba path:

* matmul MACs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention;
  FLOPs / 2), with the weight gradient of grouped convolutions counted per group (torch 2.11
  counts it ``groups`` times too much: E times for the depthwise conv of a Mamba mixer);
* scan MACs: the selective scan counted analytically (:func:`selective_scan_macs`), since
  FlopCounterMode sees neither the mamba-ssm kernel nor the elementwise work of a scan. During
  counting every scan is replaced by a stand-in of the same shapes that does no counted work.

Wall time is the median of ``repeat`` runs after ``warmup`` runs (CUDA events on GPU,
``time.perf_counter`` on CPU), on random audio. RTF is time / (batch x audio seconds).
Peak memory is what a step allocates above what was allocated before it (see :class:`PeakMemory`).
A CUDA out-of-memory error becomes a result with status "OOM"; the run goes on.
"""

import contextlib
import dataclasses
import gc
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

import espnet_mamba
from espnet_mamba.nn.feature_extractor import MIN_SAMPLES, conv_output_lengths
from espnet_mamba.ops import selective_scan, selective_state_update
from espnet_mamba.validation import SAMPLE_RATE, checked_lengths

MODES = ("infer", "train", "stream")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MASK_PROB = 0.5  # fraction of frames masked in a training step, about HuBERT's
STREAM_WARMUP_STEPS = 50  # steps of a throwaway stream before the measured one
STREAM_MAC_WINDOW_S = 0.1  # stream MACs: of this much audio at the end of the stream
MIB = 2**20
T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """One measurement of a preset: ``mode`` over ``batch`` utterances of ``seconds`` each."""

    mode: str
    seconds: float
    batch: int = 1
    dtype: str = "float32"

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.seconds > 0 or self.samples < MIN_SAMPLES:
            raise ValueError(f"audio of {self.seconds} s is shorter than one frame (25 ms)")

    @property
    def samples(self) -> int:
        return round(self.seconds * SAMPLE_RATE)


@dataclass
class Result:
    """The cost of one (preset, setting). Times in seconds, memory in MiB; None: not measured.

    status: "ok", "OOM", or "n/a" (the setting does not apply, see ``note``).
    mac_window_s: seconds of each utterance the MACs are for: all of it, except for stream
    results, whose MACs are those of the last steps of the stream (see :func:`stream_macs`).
    """

    preset: str
    mode: str
    seconds: float
    batch: int
    dtype: str
    device: str
    status: str = "ok"
    matmul_macs: Optional[int] = None
    scan_macs: Optional[int] = None
    mac_window_s: Optional[float] = None
    time_s: Optional[float] = None
    times_s: List[float] = field(default_factory=list)
    peak_mem_mib: Optional[float] = None
    step_ms: Optional[float] = None  # stream: median latency of one step
    step_p90_ms: Optional[float] = None
    note: str = ""

    @property
    def macs(self) -> Optional[int]:
        return None if self.matmul_macs is None else self.matmul_macs + self.scan_macs

    @property
    def macs_per_second(self) -> Optional[float]:
        """MACs per second of audio."""
        return None if self.macs is None else self.macs / (self.batch * self.mac_window_s)

    @property
    def rtf(self) -> Optional[float]:
        """Real-time factor: wall time / (batch x audio seconds)."""
        return None if self.time_s is None else self.time_s / (self.batch * self.seconds)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(macs=self.macs, macs_per_second=self.macs_per_second, rtf=self.rtf)
        return d


# MACs -------------------------------------------------------------------------------------------


def selective_scan_macs(batch: int, channels: int, length: int, d_state: int) -> int:
    """MACs of one forward selective scan over (batch, channels E, length L) with state N.

    Per (b, t, e, n): dt*A, (dt*u)*B, h = exp(.)*h + drive, y += C*h: 4 multiply-adds.
    Per (b, t, e): dt*u, the skip D*u, the gate y*silu(z): 3. The exp and softplus are not
    counted, as FlopCounterMode counts no activation either.
    """
    return batch * length * channels * (4 * d_state + 3)


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
                         transposed, _output_padding, _groups, output_mask, out_shape) -> int:
    """FLOPs of aten.convolution_backward: each of the input and weight gradients costs what the
    forward costs. Unlike torch's formula, right for grouped convs."""
    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        flops += conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return flops


class MacCount:
    """Running totals of one counting pass: ``matmul`` (FlopCounterMode) and ``scan_forward``
    (analytic, forward scans only)."""

    def __init__(self, flop_counter: FlopCounterMode):
        self._flop_counter = flop_counter
        self.scan_forward = 0

    @property
    def matmul(self) -> int:
        return self._flop_counter.get_total_flops() // 2

    def scan_standin(self, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                     initial_state=None, return_last_state=False, **_):
        """:func:`espnet_mamba.ops.selective_scan`'s shapes without its work; adds its MACs.

        The output touches u, delta, B, C and z, so a backward pass reaches every projection
        that feeds the scan, as it does through the real one.
        """
        batch, channels, length = u.shape
        self.scan_forward += selective_scan_macs(batch, channels, length, A.shape[1])
        out = u * delta + (B.sum(1) + C.sum(1))[:, None]
        if z is not None:
            out = out * z
        if not return_last_state:
            return out
        if initial_state is None:
            initial_state = u.new_zeros(batch, channels, A.shape[1], dtype=torch.float32)
        return out, initial_state

    def state_update_standin(self, state, u, delta, A, B, C, D=None, z=None, delta_bias=None, impl="auto"):
        """:func:`espnet_mamba.ops.selective_state_update` (one frame of a stream) as
        :meth:`scan_standin` of that frame."""
        out, state = self.scan_standin(u[..., None], delta[..., None], A, B[..., None], C[..., None], D,
                                       None if z is None else z[..., None], initial_state=state,
                                       return_last_state=True)  # fmt: skip
        return out[..., 0], state


def _patch_everywhere(stack: contextlib.ExitStack, original, replacement) -> None:
    """Replace ``original`` in every espnet_mamba module that imported it by name."""
    for name, module in list(sys.modules.items()):
        if name.startswith("espnet_mamba") and getattr(module, original.__name__, None) is original:
            stack.enter_context(_setattr(module, original.__name__, replacement))


@contextlib.contextmanager
def _setattr(obj, name, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def count_macs() -> Iterator[MacCount]:
    """Count the MACs of the espnet_mamba code run inside (meta tensors welcome)."""
    flop_counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.convolution_backward: _conv_backward_flops})  # fmt: skip
    count = MacCount(flop_counter)
    with contextlib.ExitStack() as stack:
        _patch_everywhere(stack, selective_scan, count.scan_standin)
        _patch_everywhere(stack, selective_state_update, count.state_update_standin)
        stack.enter_context(flop_counter)
        yield count


def meta_model(preset: str, overrides: dict) -> espnet_mamba.MambaHuBERTForPretraining:
    """The model of ``preset`` on the meta device, with the PyTorch Mamba path."""
    with torch.device("meta"):
        return espnet_mamba.build_model(preset, **{**overrides, "ssm_impl": "torch"})


def offline_macs(model, setting: Setting):
    """(matmul MACs, scan MACs) of one ``infer`` or ``train`` step of ``model`` (meta device).

    A training step's scan MACs are three times the forward's (backward = 2 x forward).
    """
    wavs = torch.empty(setting.batch, setting.samples, device="meta")
    step = offline_step(model, setting.mode, wavs, None, "float32")
    with count_macs() as count:
        step()
    return count.matmul, count.scan_forward * (3 if setting.mode == "train" else 1)


def stream_macs(model, setting: Setting, chunk_samples: int):
    """(matmul MACs, scan MACs, seconds counted) of the last steps of a stream, about
    ``STREAM_MAC_WINDOW_S`` of audio (at least one step, at most the stream), counted step by
    step; the stream before them is fed as one chunk, which leaves the same state."""
    window = max(chunk_samples, round(min(setting.seconds, STREAM_MAC_WINDOW_S) * SAMPLE_RATE))
    steps = math.ceil(window / chunk_samples)
    with torch.no_grad():
        state = model.init_stream(setting.batch, device="meta")
        prefix = setting.samples - steps * chunk_samples
        chunk = torch.empty(setting.batch, chunk_samples, device="meta")
        with count_macs():  # counted and dropped: count_macs is what lets meta tensors through
            _, state = model.stream(torch.empty(setting.batch, prefix, device="meta"), state)
        with count_macs() as count:
            for _ in range(steps):
                _, state = model.stream(chunk, state)
    return count.matmul, count.scan_forward, steps * chunk_samples / SAMPLE_RATE


# Steps ------------------------------------------------------------------------------------------


def random_audio(batch: int, samples: int, device, seed: int = 0) -> torch.Tensor:
    """(batch, samples) Gaussian noise at about -20 dBFS; never zeros."""
    generator = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, samples, generator=generator)).to(device)


def _autocast(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype], cache_enabled=False)


def offline_step(model, mode: str, wavs: torch.Tensor, lengths: Optional[torch.Tensor], dtype: str) -> Callable:
    """A function that runs one step on ``wavs`` (batch, samples).

    infer: ``extract_features`` in eval mode under torch.no_grad (not inference_mode, under
    which FlopCounterMode fails on weight-normed convs).
    train: the pretraining forward with a random mask (``MASK_PROB`` of the frames), cross
    entropy on the masked frames against random labels, backward; gradients set to None first.
    """
    if mode == "infer":
        model.eval()

        def infer():
            with torch.no_grad(), _autocast(wavs.device, dtype):
                model.extract_features(wavs, lengths)

        return infer
    if mode != "train":
        raise ValueError(f"offline steps are 'infer' or 'train', got {mode!r}")
    model.train()
    mask, labels = training_targets(model, wavs)

    def train():
        model.zero_grad(set_to_none=True)
        with _autocast(wavs.device, dtype):
            logits, _ = model(wavs, lengths, mask)
        masked_loss(logits, labels, mask).backward()

    return train


def training_targets(model, wavs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A random mask of ``MASK_PROB`` of the frames and random labels, both (batch, frames),
    for a training step on unpadded ``wavs`` (batch, samples)."""
    frames = int(conv_output_lengths(torch.tensor(wavs.shape[1]), model.cfg.conv_layers))
    mask = torch.rand(wavs.shape[0], frames, device=wavs.device) < MASK_PROB
    labels = torch.randint(model.cfg.num_classes, (wavs.shape[0], frames), device=wavs.device)
    return mask, labels


def masked_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy of the masked frames: logits (batch, frames, classes), float32."""
    loss = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
    return (loss * mask).sum() / mask.sum()


def capture_cuda_graph(fn: Callable[[], T], warmup: int = 3) -> Tuple[torch.cuda.CUDAGraph, T]:
    """A CUDA graph of one call of ``fn``, and what that call returned (the graph's own
    output tensors, which each replay overwrites).

    ``fn`` runs ``warmup`` times on a side stream first, as torch's recipe asks (Triton
    kernels compile, the allocator settles). Raises RuntimeError, with the reason, where the
    call cannot be captured (e.g. it reads the device).
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            output = fn()
    except Exception as error:
        raise RuntimeError(f"capture failed: {type(error).__name__}: {str(error).splitlines()[0]}") from error
    return graph, output


class GraphedExtraction:
    """``extract_features`` of unpadded batches of one shape (batch, samples), replayed from a
    CUDA graph: the time of the GPU's work without the host's time to launch it (about a
    thousand kernels for a base model, which bound the eager forward below about 160 s of audio
    on an H200).

    Each call checks its waveforms as ``extract_features`` does (one read of the device),
    copies them into the graph's input and replays. It returns the graph's own hidden-state
    tensors, which the next call overwrites. Raises ValueError for waveforms of another shape,
    RuntimeError where the forward cannot be captured.
    """

    def __init__(self, backbone, wavs: torch.Tensor, dtype: str):
        self.backbone, self.dtype = backbone, dtype
        self.wavs = wavs.clone()
        self.graph, self.hidden_states = capture_cuda_graph(self._forward)

    def _forward(self) -> List[torch.Tensor]:
        with torch.no_grad(), _autocast(self.wavs.device, self.dtype):
            x, _ = self.backbone.embed(self.wavs, None)
            return self.backbone.encode(x, None)

    def __call__(self, wavs: torch.Tensor) -> List[torch.Tensor]:
        _check_captured_shape(wavs, self.wavs, self.backbone.feature_extractor)
        self.wavs.copy_(wavs)
        self.graph.replay()
        return self.hidden_states


class GraphedTrainingStep:
    """The benchmark's ``train`` step (:func:`offline_step`) on unpadded batches of one shape,
    replayed from a CUDA graph: forward with ``mask`` (batch, frames), the masked loss against
    ``labels`` and the backward pass, without the host's launches (which bound an eager step of
    a base model at 8 x 15 s on an H200).

    The gradients are the graph's own tensors, in each parameter's ``.grad``; a replay
    overwrites them (it does not add to them). Dropout draws new numbers at each replay. Each
    call checks its waveforms as the model's forward does, copies them in and replays, and
    returns the loss tensor. Raises ValueError for waveforms of another shape, RuntimeError
    where the step cannot be captured.
    """

    def __init__(self, model, wavs: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, dtype: str):
        self.model, self.dtype, self.mask, self.labels = model.train(), dtype, mask, labels
        self.wavs = wavs.clone()
        self.graph, self.loss = capture_cuda_graph(self._step)

    def _step(self) -> torch.Tensor:
        self.model.zero_grad(set_to_none=True)  # in the capture: the backward allocates the graph's gradients
        with _autocast(self.wavs.device, self.dtype):
            logits, _ = self.model.label_logits(self.wavs, None, None, self.mask)
        loss = masked_loss(logits, self.labels, self.mask)
        loss.backward()
        return loss.detach()

    def __call__(self, wavs: torch.Tensor) -> torch.Tensor:
        _check_captured_shape(wavs, self.wavs, self.model.backbone.feature_extractor)
        self.wavs.copy_(wavs)
        self.graph.replay()
        return self.loss


def _check_captured_shape(wavs: torch.Tensor, captured: torch.Tensor, cnn) -> None:
    """ValueError where ``wavs`` are not of the captured shape or fail the model's input checks."""
    if wavs.shape != captured.shape:
        raise ValueError(f"captured for waveforms of shape {tuple(captured.shape)}, got {tuple(wavs.shape)}")
    checked_lengths(wavs, None, None, cnn.receptive_field)


def graphed_step(model, mode: str, wavs: torch.Tensor, dtype: str) -> Tuple[Callable, str]:
    """The ``infer`` or ``train`` step of :func:`offline_step` replayed from a CUDA graph
    (:class:`GraphedExtraction`, :class:`GraphedTrainingStep`), and a note; the eager step
    where capture fails, with the reason."""
    try:
        if mode == "infer":
            graphed = GraphedExtraction(model.eval().backbone, wavs, dtype)
        else:
            graphed = GraphedTrainingStep(model, wavs, *training_targets(model, wavs), dtype)
    except RuntimeError as error:
        model.zero_grad(set_to_none=True)
        return offline_step(model, mode, wavs, None, dtype), f"cuda graphs not used ({error}); eager"
    return (lambda: graphed(wavs)), "cuda graph replayed"


# Timing and memory ------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable, device: torch.device, warmup: int, repeat: int) -> List[float]:
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type != "cuda":
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    synchronize(device)
    return [start.elapsed_time(end) / 1000 for start, end in events]


def _proc_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise OSError(f"no {key} in /proc/self/status")


class PeakMemory:
    """Peak memory of a block above what was in use when it began, in MiB (``peak_mib``).

    CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` at the start.
    CPU (Linux): the process's peak resident set (VmHWM, reset by writing 5 to
    /proc/self/clear_refs) minus its resident set at the start: a lower bound, as the allocator
    may reuse pages it kept from earlier work. None where the system does not allow it.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib: Optional[float] = None

    def __enter__(self):
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._start = _proc_status_kib("VmRSS") * 1024
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mib = (torch.cuda.max_memory_allocated(self.device) - self._start) / MIB
        elif self._start is not None:
            self.peak_mib = max(0, _proc_status_kib("VmHWM") * 1024 - self._start) / MIB
        return False


# Streaming ---------------------------------------------------------------------------------------


def map_tensors(obj, fn):
    """``obj`` (dataclasses, lists, tuples of tensors, None, numbers) with each tensor t
    replaced by fn(t)."""
    if torch.is_tensor(obj):
        return fn(obj)
    if dataclasses.is_dataclass(obj):
        return type(obj)(**{f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)})
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(x, fn) for x in obj)
    return obj


def tensors_of(obj) -> List[torch.Tensor]:
    """The tensors of ``obj``, in the order :func:`map_tensors` visits them."""
    found = []
    map_tensors(obj, found.append)
    return found


def state_signature(state) -> str:
    """What must not change between steps for a CUDA graph to replay: the layout of a
    StreamState and its tensors' shapes and dtypes (not the sample count)."""
    return repr(map_tensors(dataclasses.replace(state, samples=0), lambda t: (tuple(t.shape), t.dtype)))


class GraphedStreamStep:
    """``model.stream`` on a fixed chunk shape, captured in a CUDA graph.

    The state is kept in static tensors: each step copies the chunk in, replays, and copies
    the new state over the old. Needs a state whose layout and shapes stay the same from step
    to step; raises RuntimeError (with the reason) where it cannot capture.
    """

    def __init__(self, model, state, chunk: torch.Tensor, dtype: str):
        self.signature = state_signature(state)
        self.chunk = chunk.clone()
        self.state = map_tensors(state, torch.clone)

        def step():
            with _autocast(chunk.device, dtype):
                return model.stream_step(self.chunk, self.state)[1]

        self.graph, new_state = capture_cuda_graph(step)
        if state_signature(new_state) != self.signature:
            raise RuntimeError("the stream state changes shape from step to step (e.g. a growing key/value cache)")
        # what the step carries over unchanged (the positional conv's weight) needs no copy
        self.targets = [(old, new) for old, new in zip(tensors_of(self.state), tensors_of(new_state)) if old is not new]

    def load(self, state) -> None:
        """Continue from ``state`` (same signature)."""
        for static, value in zip(tensors_of(self.state), tensors_of(state)):
            static.copy_(value)

    def __call__(self, chunk: torch.Tensor) -> None:
        self.chunk.copy_(chunk)
        self.graph.replay()
        for old, new in self.targets:
            old.copy_(new)


def _run_stream(model, wavs, chunk_samples: int, dtype: str, graphed: Optional[GraphedStreamStep],
                max_frames: Optional[int] = None) -> List[float]:
    """Stream ``wavs`` chunk by chunk; seconds of each step (eager until the state matches
    ``graphed``'s, replays after). ``max_frames``: see ``init_stream``."""
    device = wavs.device
    cuda = device.type == "cuda"
    state = model.init_stream(wavs.shape[0], device, max_frames)
    times, replaying = [], False  # CUDA: (start, end) event pairs; CPU: seconds
    for start in range(0, wavs.shape[1], chunk_samples):
        chunk = wavs[:, start : start + chunk_samples]
        if graphed is not None and not replaying and state_signature(state) == graphed.signature:
            graphed.load(state)
            replaying = True
        begin = torch.cuda.Event(enable_timing=True) if cuda else time.perf_counter()
        if cuda:
            begin.record()
        if replaying:
            graphed(chunk)
        else:
            with _autocast(device, dtype):
                _, state = model.stream(chunk, state)
        if cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            times.append((begin, end))
        else:
            times.append(time.perf_counter() - begin)
    synchronize(device)
    return [begin.elapsed_time(end) / 1000 for begin, end in times] if cuda else times


def measure_stream(model, wavs, chunk_samples: int, dtype: str, cuda_graphs: bool):
    """Per-step seconds of streaming ``wavs`` after a throwaway stream, and a note on CUDA
    graphs ("" when not asked for). With CUDA graphs, key/value caches have a fixed capacity:
    the frames of ``wavs``."""
    warmup = wavs[:, : min(wavs.shape[1], STREAM_WARMUP_STEPS * chunk_samples)]
    max_frames = int(conv_output_lengths(torch.tensor(wavs.shape[1]), model.cfg.conv_layers)) if cuda_graphs else None
    _run_stream(model, warmup, chunk_samples, dtype, None, max_frames)
    graphed, note = None, ""
    if cuda_graphs:
        state = model.init_stream(wavs.shape[0], wavs.device, max_frames)
        with _autocast(wavs.device, dtype):
            for start in range(0, warmup.shape[1], chunk_samples):
                _, state = model.stream(warmup[:, start : start + chunk_samples], state)
        try:
            graphed = GraphedStreamStep(model, state, warmup[:, :chunk_samples], dtype)
            note = "cuda graphs: steady-state steps replayed"
        except RuntimeError as error:
            note = f"cuda graphs not used ({error}); eager steps"
    return _run_stream(model, wavs, chunk_samples, dtype, graphed, max_frames), note


# One preset, all settings ------------------------------------------------------------------------


@dataclass
class BenchmarkSpec:
    """Everything one benchmark run measures. ``overrides`` apply to every preset.

    ``cuda_graphs``: replay each ``infer`` forward (:class:`GraphedExtraction`), each
    ``train`` step (:class:`GraphedTrainingStep`) and the steady-state ``stream`` steps
    (:class:`GraphedStreamStep`) from CUDA graphs.
    """

    presets: Sequence[str]
    settings: Sequence[Setting]
    device: str = "cpu"
    overrides: dict = field(default_factory=dict)
    warmup: int = 2
    repeat: int = 5
    chunk_ms: float = 20.0
    cuda_graphs: bool = False
    seed: int = 0

    def __post_init__(self):
        known = espnet_mamba.list_presets()
        unknown = [p for p in self.presets if p not in known]
        if not self.presets or unknown:
            raise ValueError(f"unknown or no presets {unknown}; presets: {', '.join(known)}")
        if not self.settings:
            raise ValueError("nothing to measure: no settings")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but CUDA is not available")
        if self.warmup < 0 or self.repeat < 1:
            raise ValueError(f"need warmup >= 0 and repeat >= 1, got {self.warmup}, {self.repeat}")
        if self.cuda_graphs and self.device != "cuda":
            raise ValueError("cuda_graphs needs device 'cuda'")
        for s in self.settings:
            if s.mode == "stream" and s.samples % self.chunk_samples:
                raise ValueError(f"stream: {s.seconds} s is not a whole number of {self.chunk_ms} ms chunks")

    @property
    def chunk_samples(self) -> int:
        samples = self.chunk_ms * SAMPLE_RATE / 1000
        if samples < 1 or samples != int(samples):
            raise ValueError(f"chunk_ms {self.chunk_ms} is not a whole number (>= 1) of 16 kHz samples")
        return int(samples)


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(spec: BenchmarkSpec, preset: str, model, meta, setting: Setting) -> Result:
    """The Result of one setting; "OOM" where the device runs out of memory."""
    device = torch.device(spec.device)
    result = Result(preset, setting.mode, setting.seconds, setting.batch, setting.dtype, spec.device)
    if setting.mode == "stream" and not model.cfg.causal:
        result.status, result.note = "n/a", "not causal: does not stream"
        return result
    if setting.mode == "stream":
        result.matmul_macs, result.scan_macs, result.mac_window_s = stream_macs(meta, setting, spec.chunk_samples)
    else:
        result.matmul_macs, result.scan_macs = offline_macs(meta, setting)
        result.mac_window_s = setting.seconds
    try:
        wavs = random_audio(setting.batch, setting.samples, device, spec.seed)
        if setting.mode == "stream":
            model.eval()
            with PeakMemory(device) as memory:
                steps, result.note = measure_stream(model, wavs, spec.chunk_samples, setting.dtype, spec.cuda_graphs)
            result.times_s = [sum(steps)]
            step_ms = sorted(1000 * t for t in steps)
            result.step_ms = statistics.median(step_ms)
            result.step_p90_ms = step_ms[min(len(step_ms) - 1, math.ceil(0.9 * len(step_ms)) - 1)]
        elif spec.cuda_graphs:
            with PeakMemory(device) as memory:  # the graph's memory is allocated when it is captured
                step, result.note = graphed_step(model, setting.mode, wavs, setting.dtype)
                result.times_s = time_calls(step, device, spec.warmup, spec.repeat)
        else:
            step = offline_step(model, setting.mode, wavs, None, setting.dtype)
            with PeakMemory(device) as memory:
                result.times_s = time_calls(step, device, spec.warmup, spec.repeat)
        result.time_s = statistics.median(result.times_s)
        result.peak_mem_mib = memory.peak_mib
    except torch.cuda.OutOfMemoryError:
        result.status, result.times_s = "OOM", []
    finally:
        model.zero_grad(set_to_none=True)
    _free_memory(device)
    return result


def run_benchmark(spec: BenchmarkSpec, log: Callable[[str], None] = lambda line: None) -> List[Result]:
    """Measure every setting of every preset, presets one after the other in this process.

    Settings run from the shortest audio up; after an OOM, longer audio of the same mode, dtype
    and batch is reported as OOM without running.
    """
    results = []
    device = torch.device(spec.device)
    settings = sorted(spec.settings, key=lambda s: (s.mode, s.dtype, s.batch, s.seconds))
    for preset in spec.presets:
        torch.manual_seed(spec.seed)
        model = espnet_mamba.build_model(preset, **spec.overrides).to(device)
        meta = meta_model(preset, spec.overrides)
        oom_at = {}
        for setting in settings:
            group = (setting.mode, setting.dtype, setting.batch)
            if group in oom_at:
                result = Result(preset, setting.mode, setting.seconds, setting.batch, setting.dtype, spec.device,
                                status="OOM", note=f"not run: OOM at {oom_at[group]:g} s")  # fmt: skip
            else:
                result = measure(spec, preset, model, meta, setting)
                if result.status == "OOM":
                    oom_at[group] = setting.seconds
            log(summary_line(result))
            results.append(result)
        del model, meta
        _free_memory(device)
    return results


# Reports -----------------------------------------------------------------------------------------


def summary_line(r: Result) -> str:
    what = f"{r.preset} {r.mode} {r.dtype} batch {r.batch} {r.seconds:g} s"
    if r.status != "ok":
        return f"{what}: {r.status} {r.note}".rstrip()
    return f"{what}: {r.time_s * 1000:.1f} ms, RTF {r.rtf:.4g}, {r.macs_per_second / 1e9:.3g} GMAC per audio s"


def speedups(results: Sequence[Result], reference: str) -> List[Optional[float]]:
    """Per result: time of ``reference`` / time of this result's preset, same setting; None
    where either is missing."""
    times = {(r.preset, r.mode, r.seconds, r.batch, r.dtype): r.time_s for r in results}
    ratios = []
    for r in results:
        ref = times.get((reference, r.mode, r.seconds, r.batch, r.dtype))
        ratios.append(ref / r.time_s if ref and r.time_s else None)
    return ratios


def _fmt(value: Optional[float], spec: str, scale: float = 1.0) -> str:
    return "–" if value is None else format(value * scale, spec)


TABLE_COLUMNS = ("preset", "mode", "dtype", "batch", "audio s", "matmul GMAC (FlopCounterMode)",
                 "scan GMAC (analytic)", "GMAC / audio s", "time ms (median)", "RTF",
                 "step ms (median / p90)", "peak MiB")  # fmt: skip


def markdown_table(results: Sequence[Result], ratio_to: Optional[str] = None) -> str:
    """The results as a Markdown table, one row each; ``ratio_to`` adds the speed-up column."""
    columns = list(TABLE_COLUMNS) + ([f"{ratio_to} time / time"] if ratio_to else []) + ["status"]
    ratios = speedups(results, ratio_to) if ratio_to else [None] * len(results)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r, ratio in zip(results, ratios):
        step = "–" if r.step_ms is None else f"{r.step_ms:.2f} / {r.step_p90_ms:.2f}"
        cells = [r.preset, r.mode, r.dtype, str(r.batch), f"{r.seconds:g}", _fmt(r.matmul_macs, ".4g", 1e-9),
                 _fmt(r.scan_macs, ".3g", 1e-9), _fmt(r.macs_per_second, ".4g", 1e-9),
                 _fmt(r.time_s, ".1f", 1e3), _fmt(r.rtf, ".4g"), step, _fmt(r.peak_mem_mib, ".0f")]  # fmt: skip
        if ratio_to:
            cells.append(_fmt(ratio, ".2f"))
        cells.append(r.status + (f" ({r.note})" if r.note else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tsv(results: Sequence[Result], path) -> None:
    keys = [k for k in results[0].to_dict() if k != "times_s"] + ["times_s"]
    with open(path, "w") as f:
        f.write("\t".join(keys) + "\n")
        for r in results:
            d = r.to_dict()
            f.write("\t".join("" if d[k] is None else json.dumps(d[k]) if k == "times_s" else str(d[k]) for k in keys))
            f.write("\n")


def plot(results: Sequence[Result], path) -> None:
    """Figure-1-style PNG against audio seconds (log axis): MACs per second of audio (linear,
    from 0) and RTF (log). One colour per preset, one line style per (mode, dtype, batch); OOM marked at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(r.preset for r in results))
    variants = list(dict.fromkeys((r.mode, r.dtype, r.batch) for r in results))
    styles = [(ls, m) for m in "osD^v" for ls in ("-", "--", ":", "-.")]
    fig, (ax_macs, ax_rtf) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for preset in presets:
        colour = plt.get_cmap("tab10")(presets.index(preset) % 10)
        for variant in variants:
            rows = [r for r in results if r.preset == preset and (r.mode, r.dtype, r.batch) == variant]
            linestyle, marker = styles[variants.index(variant) % len(styles)]
            style = dict(color=colour, linestyle=linestyle, marker=marker)
            label = preset if len(variants) == 1 else f"{preset} {variant[0]} {variant[1]} batch {variant[2]}"
            macs = [(r.seconds, r.macs_per_second / 1e9) for r in rows if r.macs is not None]
            rtf = [(r.seconds, r.rtf) for r in rows if r.rtf is not None]
            if macs:
                ax_macs.plot(*zip(*macs), label=label, **style)
            if rtf:
                ax_rtf.plot(*zip(*rtf), **style)
            for r in rows:
                if r.status == "OOM":
                    ax_rtf.text(r.seconds, 0.97, "OOM", color=colour, fontsize=8, ha="center", va="top",
                                transform=ax_rtf.get_xaxis_transform())  # fmt: skip
    seconds = sorted({r.seconds for r in results})
    ax_macs.set_ylim(bottom=0)
    ax_macs.set(ylabel="GMACs per second of audio",
                title="Compute (matmul: FlopCounterMode; scan: analytic)")  # fmt: skip
    ax_rtf.set(yscale="log", ylabel="real-time factor (time / audio s)", title=f"Wall time on {results[0].device}")
    for ax in (ax_macs, ax_rtf):
        ax.set_xscale("log")
        ax.set_xticks(seconds, [f"{s:g}" for s in seconds])
        ax.minorticks_off()
        ax.set_xlabel("audio seconds")
        ax.grid(True, alpha=0.3)
    fig.legend(loc="outside right upper", fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def environment(device: str) -> dict:
    """Where the numbers come from: date, machine, versions, and which kernels are there (the
    mamba-ssm and causal-conv1d functions that import, and Triton for ours): without
    causal-conv1d, say, the Mamba blocks train on a slower PyTorch conv."""
    import datetime
    import os
    import platform

    from espnet_mamba.ops import backend, mamba_kernels

    cpu = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device,
        "mamba_kernels": ", ".join(name for name, fn in (mamba_kernels() or {}).items() if fn is not None) or "none",
        "triton": backend.triton.__version__ if backend.triton is not None else "not installed",
    }
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def write_report(results: Sequence[Result], output_dir, env: dict, command: str,
                 ratio_to: Optional[str] = None) -> str:
    """Write benchmark.md, benchmark.json, benchmark.tsv and benchmark.png into ``output_dir``;
    return the Markdown table."""
    from pathlib import Path

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, ratio_to)
    header = [f"- {key}: {value}" for key, value in env.items()] + [f"- command: `{command}`"]
    notes = ("MACs: matmul = FlopCounterMode on the meta device (FLOPs / 2); scan = analytic, "
             "4 N + 3 MACs per frame and channel, x3 for train. RTF = time / (batch x audio s). "
             "train = forward + backward of the masked-prediction loss. stream: time = whole "
             "stream, MACs = its last ~0.1 s, per audio s. peak MiB: above the memory in use before the step "
             "(CPU: peak RSS increase, a lower bound).")  # fmt: skip
    (out / "benchmark.md").write_text("\n".join(["# Benchmark", "", *header, "", notes, "", table, ""]))
    ratios = speedups(results, ratio_to) if ratio_to else [None] * len(results)
    rows = [{**r.to_dict(), **({f"{ratio_to}_time_over_time": q} if ratio_to else {})} for r, q in zip(results, ratios)]
    (out / "benchmark.json").write_text(json.dumps({"environment": env, "command": command, "results": rows}, indent=1))
    write_tsv(results, out / "benchmark.tsv")
    plot(results, out / "benchmark.png")
    return table
