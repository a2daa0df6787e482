"""Streaming CTC recognition with a causal Mamba-HuBERT ASR model trained in ESPnet.

audio chunk (samples,) -> backbone.stream (carried state) -> last hidden state of the new
20 ms frames -> the model's CTC layer -> log-posteriors -> a CTC decoder carried across chunks
(:mod:`espnet_mamba.ctc_decoding`) -> partial hypothesis.

The backbone's stream gives exactly the frames of an offline forward, and the decoders are
frame-synchronous, so the final hypothesis is the offline one. Timing follows a real-time
simulation: chunk i arrives when its last sample has been spoken, is processed once it has
arrived and chunk i - 1 is done, and its tokens are emitted when its processing ends.
"""

import hashlib
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from espnet_mamba.ctc_decoding import Hypothesis, build_decoder
from espnet_mamba.espnet.checkpoint import BEST_MODEL_FILES
from espnet_mamba.quantization import quantize_linear_int8
from espnet_mamba.validation import SAMPLE_RATE

MIN_CHUNK_MS, MAX_CHUNK_MS = 20, 1000
UNPACK_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "espnet_mamba" / "unpacked"


# Loading ----------------------------------------------------------------------------------


def resolve_model(model: Union[str, Path], model_file: Union[str, Path, None] = None) -> Tuple[Path, Path]:
    """(config.yaml, model .pth) of a packed zip, an experiment directory, or a config file
    (with ``model_file``, else the best model beside it). A zip unpacks into ``UNPACK_CACHE``,
    in a folder of its path, size and modification time: a zip packed again at the same path
    is unpacked again (ESPnet's model cache keys local zips by their path alone)."""
    model = Path(model)
    if not model.exists():
        raise FileNotFoundError(f"no ASR model at {model}")
    if model.suffix == ".zip":
        from espnet2.main_funcs.pack_funcs import unpack

        stat = model.stat()
        key = hashlib.sha1(f"{model.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        files = unpack(model, UNPACK_CACHE / key)
        if "asr_train_config" not in files:
            raise ValueError(f"{model} is not a packed ESPnet ASR model (made by espnet2.bin.pack asr)")
        return Path(files["asr_train_config"]), Path(files["asr_model_file"])
    config = model / "config.yaml" if model.is_dir() else model
    if not config.exists():
        raise FileNotFoundError(f"no config.yaml in {model}")
    if config.suffix not in (".yaml", ".yml"):
        raise ValueError(f"{model} is neither a packed zip, an experiment directory nor a config.yaml: give the "
                         "config.yaml (or its directory) as the model, and a .pth as its model file")  # fmt: skip
    if model_file is None:
        found = [config.parent / name for name in BEST_MODEL_FILES if (config.parent / name).exists()]
        if not found:
            raise FileNotFoundError(f"no model file ({', '.join(BEST_MODEL_FILES)}) beside {config}")
        model_file = found[0]
    return config, Path(model_file)


def load_asr_model(model: Union[str, Path], model_file: Union[str, Path, None] = None, device: str = "cpu"):
    """(ESPnet ASR model in eval mode, its training args) built by ESPnet's ASR task with our
    encoder registered; the weights must fit the model exactly."""
    from espnet_mamba.espnet.tasks import MambaASRTask

    config, weights = resolve_model(model, model_file)
    asr_model, args = MambaASRTask.build_model_from_file(config, None, device)
    state = torch.load(weights, map_location=device, weights_only=True)
    missing, unexpected = asr_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights} does not fit the model of {config}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return asr_model.eval(), args


class TokenText:
    """Token ids -> text, with the token list and tokenizer of the model's training."""

    def __init__(self, args):
        from espnet2.text.build_tokenizer import build_tokenizer
        from espnet2.text.token_id_converter import TokenIDConverter

        self.converter = TokenIDConverter(token_list=args.token_list)
        bpemodel = getattr(args, "bpemodel", None)
        self.tokenizer = build_tokenizer(token_type=args.token_type, bpemodel=bpemodel)

    def __call__(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.tokens2text(self.converter.ids2tokens(list(token_ids)))

    def token(self, token_id: int) -> str:
        """One token as it is in the token list."""
        return self.converter.ids2tokens([token_id])[0]


# Recognition ------------------------------------------------------------------------------


def check_ctc(asr_model) -> None:
    """Raise ValueError unless ``asr_model`` has a CTC layer."""
    if getattr(asr_model, "ctc", None) is None:
        raise ValueError("the model has no CTC layer (trained with ctc_weight 0): it cannot be decoded with CTC")


def check_streamable(asr_model) -> None:
    """Raise ValueError unless ``asr_model`` is a raw-waveform ``mamba_hubert`` CTC model with
    a causal backbone."""
    from espnet_mamba.espnet.encoder import MambaHuBERTEncoder

    if not isinstance(asr_model.encoder, MambaHuBERTEncoder):
        raise ValueError(f"streaming needs encoder: mamba_hubert, got {type(asr_model.encoder).__name__}")
    for name in ("frontend", "normalize", "preencoder", "postencoder"):
        if getattr(asr_model, name, None) is not None:
            raise ValueError(f"streaming needs a raw-waveform model without {name}; this one has one")
    check_ctc(asr_model)
    cfg = asr_model.encoder.backbone.cfg
    if not cfg.causal:
        raise ValueError(
            f"the model's encoder ({cfg.layer_type}, causal: false) is bidirectional and cannot stream; "
            "decode it offline (--offline, or espnet_mamba.bin.asr_inference) or fine-tune a causal "
            "preset (mamba_*, causal_transformer_*)"
        )


def chunk_samples(chunk_ms: float) -> int:
    if not MIN_CHUNK_MS <= chunk_ms <= MAX_CHUNK_MS:
        raise ValueError(f"chunk_ms must be within {MIN_CHUNK_MS}..{MAX_CHUNK_MS}, got {chunk_ms}")
    return int(round(chunk_ms * SAMPLE_RATE / 1000))


@dataclass
class ChunkRecord:
    """One processed chunk: its last sample's index + 1, compute seconds, and the partial
    hypothesis after it."""

    end_sample: int
    compute_s: float
    partial: Hypothesis


@dataclass
class StreamResult:
    """One decoded utterance: the final hypothesis, every chunk's record, its length."""

    final: Hypothesis
    chunks: List[ChunkRecord] = field(default_factory=list)
    num_samples: int = 0


class StreamingRecognizer:
    """A causal backbone, a frame classifier and a CTC decoder, driven chunk by chunk.

    Args:
        backbone: a causal :class:`espnet_mamba.MambaHuBERT`.
        log_probs: last hidden state (1, frames, D) -> CTC log-posteriors (1, frames, vocab).
        decoder: a decoder of :mod:`espnet_mamba.ctc_decoding`.
    """

    def __init__(self, backbone, log_probs: Callable[[torch.Tensor], torch.Tensor], decoder):
        self.backbone, self.log_probs, self.decoder = backbone, log_probs, decoder
        self.reset()

    @classmethod
    def from_asr_model(cls, asr_model, decoder="greedy", beam_size: int = 8, token_beam: Optional[int] = 16):
        """From an ESPnet ASR model with a ``mamba_hubert`` encoder (checked: causal, CTC)."""
        check_streamable(asr_model)
        blank = getattr(asr_model, "blank_id", 0)
        if isinstance(decoder, str):
            decoder = build_decoder(decoder, beam_size, token_beam, blank)
        return cls(asr_model.encoder.backbone, asr_model.ctc.log_softmax, decoder)

    def reset(self) -> None:
        self.state = self.backbone.init_stream(1)
        self.decoder.reset()

    @torch.no_grad()
    def feed(self, chunk: torch.Tensor) -> Hypothesis:
        """The next samples (samples,) of the stream -> the partial hypothesis."""
        if chunk.dim() != 1:
            raise ValueError(f"a chunk is one mono stream (samples,), got shape {tuple(chunk.shape)}")
        device = next(self.backbone.parameters()).device
        hidden_states, self.state = self.backbone.stream(chunk[None].to(device), self.state)
        last = hidden_states[-1]
        if last.shape[1] > 0:
            self.decoder.step(self.log_probs(last)[0])
        return self.decoder.best()

    def frame_end_sample(self, frame: int) -> int:
        """Samples that must have arrived before ``frame`` can be computed."""
        extractor = self.backbone.feature_extractor
        return frame * extractor.stride + extractor.receptive_field

    def run(self, wav: torch.Tensor, chunk_size: int, on_partial: Optional[Callable] = None) -> StreamResult:
        """Stream one utterance (samples,) in chunks of ``chunk_size`` samples, timing each.

        ``on_partial(end_sample, hypothesis)`` is called after every chunk that changed it.
        """
        self.reset()
        result = StreamResult(final=self.decoder.best(), num_samples=wav.shape[0])
        previous = result.final.tokens
        for start in range(0, wav.shape[0], chunk_size):
            chunk = wav[start : start + chunk_size]
            began = time.perf_counter()
            partial = self.feed(chunk)
            compute = time.perf_counter() - began
            result.chunks.append(ChunkRecord(start + chunk.shape[0], compute, partial))
            if on_partial is not None and partial.tokens != previous:
                on_partial(start + chunk.shape[0], partial)
            previous = partial.tokens
        result.final = self.decoder.best()
        return result


@torch.no_grad()
def offline_log_probs(asr_model, wav: torch.Tensor) -> torch.Tensor:
    """CTC log-posteriors (frames, vocab) of a whole utterance (samples,) via ESPnet's
    ``encode`` and the model's CTC layer."""
    speech = wav[None].to(next(asr_model.parameters()).device)
    encoded, _ = asr_model.encode(speech, torch.tensor([wav.shape[0]], device=speech.device))
    if isinstance(encoded, tuple):  # intermediate CTC outputs
        encoded = encoded[0]
    return asr_model.ctc.log_softmax(encoded)[0]


def offline_decode(asr_model, wav: torch.Tensor, decoder) -> StreamResult:
    """The same decoders on a whole utterance at once (any CTC model, bidirectional ones
    too): a result with one chunk, timed."""
    began = time.perf_counter()
    decoder.reset()
    decoder.step(offline_log_probs(asr_model, wav))
    final = decoder.best()
    record = ChunkRecord(wav.shape[0], time.perf_counter() - began, final)
    return StreamResult(final, [record], wav.shape[0])


# Timing -----------------------------------------------------------------------------------


def emission_times(chunks: Sequence[ChunkRecord]) -> List[float]:
    """Seconds from stream start at which each chunk's result is out: a chunk starts when
    its audio has arrived and the previous chunk is done."""
    done, times = 0.0, []
    for record in chunks:
        done = max(done, record.end_sample / SAMPLE_RATE) + record.compute_s
        times.append(done)
    return times


@dataclass(frozen=True)
class TokenTiming:
    """A token of the final hypothesis: the end of its frame's audio and the time it was
    emitted, in seconds from the stream's start."""

    token: int
    frame: int
    frame_end_s: float
    emitted_s: float

    @property
    def delay_s(self) -> float:
        return self.emitted_s - self.frame_end_s


def token_timings(result: StreamResult, frame_end_sample: Callable[[int], int]) -> List[TokenTiming]:
    """Per token of the final hypothesis, when its frame's audio ended and when it was
    emitted: the emission of the first partial hypothesis from which on it (and all tokens
    before it) stays as in the final one."""
    final, times = result.final, emission_times(result.chunks)
    timings = []
    for position in range(len(final.tokens)):
        target = final.tokens[: position + 1]
        stable_from = len(result.chunks)
        for index in range(len(result.chunks) - 1, -1, -1):
            if result.chunks[index].partial.tokens[: position + 1] != target:
                break
            stable_from = index
        frame = final.frames[position]
        timings.append(TokenTiming(final.tokens[position], frame, frame_end_sample(frame) / SAMPLE_RATE,
                                   times[stable_from]))  # fmt: skip
    return timings


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0..100, linear interpolation) or None for no values."""
    return float(np.percentile(values, q)) if len(values) else None


def summarize(results: Sequence[StreamResult], delays: Sequence[float], chunk_ms: float) -> dict:
    """RTF, per-chunk compute (ms, median / p95) and token delay (ms) over utterances."""
    compute = [record.compute_s for result in results for record in result.chunks]
    audio_s = sum(result.num_samples for result in results) / SAMPLE_RATE

    def ms(value):
        return None if value is None else round(1000 * value, 3)

    return {
        "chunk_ms": chunk_ms,
        "utterances": len(results),
        "audio_s": round(audio_s, 3),
        "rtf": round(sum(compute) / audio_s, 5) if audio_s else None,
        "chunks": len(compute),
        "chunk_compute_ms_median": ms(statistics.median(compute)) if compute else None,
        "chunk_compute_ms_p95": ms(percentile(compute, 95)),
        "tokens": len(delays),
        "token_delay_ms_mean": ms(statistics.fmean(delays)) if delays else None,
        "token_delay_ms_median": ms(statistics.median(delays)) if delays else None,
        "token_delay_ms_p95": ms(percentile(delays, 95)),
    }


# Benchmark --------------------------------------------------------------------------------


def benchmark_preset(preset: str, seconds: float, chunk_ms: float, vocab_size: int = 32, seed: int = 0,
                     repeats: int = 1, quantize: bool = False, **overrides) -> dict:
    """Streaming cost of a randomly initialised causal preset with a CTC layer of
    ``vocab_size`` and greedy decoding on ``seconds`` of noise, after a warm-up stream of one
    second. The stream runs ``repeats`` times: the RTF is the median of the runs (each run's
    in ``rtf_runs``, so a noisy machine shows as their spread), the per-chunk compute (median,
    p95) is over all their chunks, and the last chunk's (which grows with the stream for
    attention's key/value cache) is the last run's. ``quantize``: backbone and CTC layer with
    int8 linear layers (:func:`espnet_mamba.quantization.quantize_linear_int8`; CPU)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    import espnet_mamba

    cfg = espnet_mamba.load_config(preset, **overrides)
    if not cfg.causal:
        raise ValueError(f"preset {preset} is bidirectional and cannot stream")
    torch.manual_seed(seed)
    backbone = espnet_mamba.MambaHuBERT(cfg).eval()
    head = torch.nn.Linear(backbone.output_size, vocab_size).eval()
    parameters_m = round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2)
    if quantize:
        backbone, head = quantize_linear_int8(backbone), quantize_linear_int8(head)
    recognizer = StreamingRecognizer(backbone, lambda h: head(h).log_softmax(-1), build_decoder("greedy"))
    size = chunk_samples(chunk_ms)
    if seconds * SAMPLE_RATE < size:
        raise ValueError(f"{seconds} s of audio make no chunk of {chunk_ms} ms: give more seconds")
    recognizer.run(0.1 * torch.randn(SAMPLE_RATE), size)  # warm-up
    audio = 0.1 * torch.randn(int(seconds * SAMPLE_RATE))
    results = [recognizer.run(audio, size) for _ in range(repeats)]
    summary = summarize(results, [], chunk_ms)
    rtf_runs = [summarize([result], [], chunk_ms)["rtf"] for result in results]
    return {
        "preset": preset,
        "parameters_m": parameters_m,
        "linear_layers": "int8" if quantize else "float32",
        "seconds": seconds,
        "chunk_ms": chunk_ms,
        "rtf": statistics.median(rtf_runs),
        "rtf_runs": rtf_runs,
        "chunk_compute_ms_median": summary["chunk_compute_ms_median"],
        "chunk_compute_ms_p95": summary["chunk_compute_ms_p95"],
        "last_chunk_compute_ms": round(1000 * results[-1].chunks[-1].compute_s, 3),
        "torch_threads": torch.get_num_threads(),
    }
