"""ASR through ESPnet: CTC decoders, streaming == offline decoding, the streaming CLI, the
fine-tuning config, packing + Speech2Text, the Hub upload's failure, scoring, documents."""

import itertools
import json
import math
import zipfile
from pathlib import Path
from unittest import mock

import editdistance
import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import TINY_CNN
from espnet_mamba import asr_streaming
from espnet_mamba.ctc_decoding import CTCPrefixBeamSearch, GreedyCTCDecoder, build_decoder
from espnet_mamba.espnet.checkpoint import load_pretrained
from espnet_mamba.espnet.tasks import MambaASRTask, MambaSSLTask

REPO = Path(__file__).resolve().parents[1]
TOKENS = ["<blank>", "<unk>", "<space>", "a", "b", "c", "d", "e", "<sos/eos>"]
TINY_ENCODER = dict(
    d_model=32, num_layers=2, heads=4, d_state=4, expand=2, pos_conv_kernel=8, pos_conv_groups=4,
    conv_layers=[list(layer) for layer in TINY_CNN], dropout=0.0, attention_dropout=0.0, dropout_input=0.0,
    ssm_impl="torch",
)  # fmt: skip


# CTC decoders ------------------------------------------------------------------------------


def collapse(path, blank=0):
    return tuple(t for t, _ in itertools.groupby(path) if t != blank)


def exact_label_log_probs(log_probs: torch.Tensor) -> dict:
    """{label sequence: log sum over all its alignments} by enumerating every path."""
    totals = {}
    frames, vocab = log_probs.shape
    for path in itertools.product(range(vocab), repeat=frames):
        score = float(sum(log_probs[t, k] for t, k in enumerate(path)))
        label = collapse(path)
        totals[label] = np.logaddexp(totals.get(label, -math.inf), score)
    return totals


def test_prefix_beam_search_equals_exact_sums_on_hand_made_posterior():
    probs = torch.tensor(
        [[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.4, 0.3, 0.3], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]],
        dtype=torch.float64,
    )  # 5 frames, blank + 2 tokens
    log_probs = probs.log()
    exact = exact_label_log_probs(log_probs)
    search = CTCPrefixBeamSearch(beam_size=len(exact), token_beam=None)
    search.step(log_probs)
    found = {h.tokens: h.score for h in search.hypotheses()}
    assert found.keys() == exact.keys()
    for label, score in exact.items():
        assert found[label] == pytest.approx(score, abs=1e-9)
    assert search.best().tokens == max(exact, key=exact.get)


def test_beam_search_finds_the_label_greedy_misses():
    """Two frames, P(blank) = 0.6: the best path is empty (0.36), but 'a' has 0.64."""
    log_probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    greedy, beam = GreedyCTCDecoder(), CTCPrefixBeamSearch(beam_size=2)
    greedy.step(log_probs)
    beam.step(log_probs)
    assert greedy.best().tokens == ()
    assert beam.best().tokens == (1,)
    assert math.exp(beam.best().score) == pytest.approx(0.64)


def test_beam_search_never_emits_the_blank_or_impossible_tokens():
    """Log-probabilities of -inf (masked tokens) tie with the blank the search masks itself."""
    log_probs = torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 3).log()  # tokens 2 and 3 impossible
    search = CTCPrefixBeamSearch(beam_size=4)
    search.step(log_probs)
    assert all(0 not in h.tokens and 2 not in h.tokens and 3 not in h.tokens for h in search.hypotheses())
    assert search.best().tokens == (1,)


def test_greedy_merges_repeats_and_keeps_emission_frames():
    path = [0, 1, 1, 0, 1, 2, 2, 0]
    log_probs = torch.nn.functional.one_hot(torch.tensor(path), 3).float().clamp(min=1e-4).log()
    greedy = GreedyCTCDecoder()
    greedy.step(log_probs)
    assert greedy.best().tokens == (1, 1, 2)
    assert greedy.best().frames == (1, 4, 5)


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_decoders_give_the_same_result_for_any_chunking(kind):
    torch.manual_seed(0)
    log_probs = (3 * torch.randn(60, 6)).log_softmax(-1)
    whole = build_decoder(kind, beam_size=4, token_beam=3)
    whole.step(log_probs)
    for bounds in ([0, 1, 2, 60], [0, 17, 18, 40, 60], list(range(0, 61, 7)) + [60]):
        chunked = build_decoder(kind, beam_size=4, token_beam=3)
        for a, b in zip(bounds, bounds[1:]):
            chunked.step(log_probs[a:b])
        assert chunked.best() == whole.best()


def test_decoder_arguments_are_checked():
    with pytest.raises(ValueError, match="beam_size"):
        CTCPrefixBeamSearch(beam_size=0)
    with pytest.raises(ValueError, match="greedy' or 'beam"):
        build_decoder("viterbi")
    with pytest.raises(ValueError, match=r"\(frames, vocab\)"):
        GreedyCTCDecoder().step(torch.zeros(2, 3, 4))


# A tiny ESPnet ASR model --------------------------------------------------------------------


def make_asr_exp(root: Path, preset: str, seed: int = 0) -> Path:
    """An experiment dir (config.yaml from ESPnet's dry run, random weights) of a tiny CTC
    model of ``preset``; the CTC layer is scaled up so greedy decoding emits tokens."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tokens.txt").write_text("".join(t + "\n" for t in TOKENS))
    config = {
        "encoder": "mamba_hubert", "encoder_conf": {"preset": preset, **TINY_ENCODER},
        "input_size": 1, "frontend": None, "normalize": None, "specaug": None, "preencoder": None,
        "decoder": None, "model_conf": {"ctc_weight": 1.0},
    }  # fmt: skip
    (root / "train.yaml").write_text(yaml.safe_dump(config))
    exp = root / "exp"
    MambaASRTask.main(cmd=[
        "--config", str(root / "train.yaml"), "--dry_run", "true", "--iterator_type", "none",
        "--output_dir", str(exp), "--token_list", str(root / "tokens.txt"), "--token_type", "char",
    ])  # fmt: skip
    torch.manual_seed(seed)
    model, _ = MambaASRTask.build_model_from_file(exp / "config.yaml", None, "cpu")
    with torch.no_grad():
        model.ctc.ctc_lo.weight.normal_(std=2.0)
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    return exp


@pytest.fixture(scope="module")
def mamba_exp(tmp_path_factory):
    return make_asr_exp(tmp_path_factory.mktemp("mamba"), "mamba_small")


@pytest.fixture(scope="module")
def audio():
    torch.manual_seed(1)
    t = torch.arange(28000) / 16000
    return 0.3 * torch.sin(2 * math.pi * 220 * t * (1 + t)) + 0.05 * torch.randn(t.shape)


def espnet_ctc_greedy(asr_model, wav):
    """ESPnet's own offline CTC greedy decoding: encode, ``ctc.argmax``, collapse, drop blanks."""
    with torch.no_grad():
        encoded, _ = asr_model.encode(wav[None], torch.tensor([wav.shape[0]]))
        best = asr_model.ctc.argmax(encoded)[0].tolist()
    return collapse(best, asr_model.blank_id)


@pytest.mark.parametrize("preset", ["mamba_small", "causal_transformer_small", "mamba_mlp_small"])
def test_streaming_final_equals_offline_and_espnet_greedy(preset, tmp_path, audio, mamba_exp):
    exp = mamba_exp if preset == "mamba_small" else make_asr_exp(tmp_path, preset)
    asr_model, _ = asr_streaming.load_asr_model(exp)
    reference = espnet_ctc_greedy(asr_model, audio)
    assert len(reference) > 5  # the test means something only if tokens come out
    offline = asr_streaming.offline_decode(asr_model, audio, GreedyCTCDecoder()).final
    assert offline.tokens == reference
    recognizer = asr_streaming.StreamingRecognizer.from_asr_model(asr_model, "greedy")
    for chunk_ms in (20, 100, 330, 1000):
        streamed = recognizer.run(audio, asr_streaming.chunk_samples(chunk_ms)).final
        assert streamed.tokens == reference, chunk_ms
        assert streamed.frames == offline.frames


def test_streaming_beam_search_equals_offline_beam_search(mamba_exp, audio):
    asr_model, _ = asr_streaming.load_asr_model(mamba_exp)
    offline = asr_streaming.offline_decode(asr_model, audio, build_decoder("beam", 6, 4)).final
    recognizer = asr_streaming.StreamingRecognizer.from_asr_model(asr_model, "beam", beam_size=6, token_beam=4)
    streamed = recognizer.run(audio, asr_streaming.chunk_samples(160)).final
    assert streamed.tokens == offline.tokens
    assert streamed.score == pytest.approx(offline.score, abs=1e-3)


def test_partials_grow_and_delays_are_measured(mamba_exp, audio):
    asr_model, _ = asr_streaming.load_asr_model(mamba_exp)
    recognizer = asr_streaming.StreamingRecognizer.from_asr_model(asr_model, "greedy")
    seen = []
    result = recognizer.run(audio, asr_streaming.chunk_samples(200), on_partial=lambda s, h: seen.append((s, h)))
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    for (_, earlier), (_, later) in zip(seen, seen[1:]):  # greedy partials only ever grow
        assert later.tokens[: len(earlier.tokens)] == earlier.tokens
    assert seen[-1][1] == result.final
    timings = asr_streaming.token_timings(result, recognizer.frame_end_sample)
    assert [t.token for t in timings] == list(result.final.tokens)
    delays = [t.delay_s for t in timings]
    # a token's frame ends inside the chunk that emits it: its delay is below the chunk length
    # plus the compute time of the stream so far
    assert all(0 < d < 0.2 + sum(c.compute_s for c in result.chunks) for d in delays)
    stats = asr_streaming.summarize([result], delays, 200)
    assert stats["chunks"] == len(result.chunks) == math.ceil(audio.shape[0] / 3200)
    assert stats["rtf"] > 0 and stats["tokens"] == len(delays)


def test_token_delay_of_a_retracted_token_counts_from_when_it_settles():
    from espnet_mamba.ctc_decoding import Hypothesis

    def chunk(end, compute, tokens):
        return asr_streaming.ChunkRecord(end, compute, Hypothesis(tokens, (0,) * len(tokens), 0.0))

    chunks = [chunk(3200, 0.01, (5,)), chunk(6400, 0.01, (6,)), chunk(9600, 0.01, (6, 7))]
    final = Hypothesis((6, 7), (2, 20), 0.0)
    result = asr_streaming.StreamResult(final, chunks, 9600)
    timings = asr_streaming.token_timings(result, lambda frame: frame * 320 + 400)
    assert [t.frame_end_s for t in timings] == pytest.approx([0.065, 0.425])
    assert [t.emitted_s for t in timings] == pytest.approx([0.41, 0.61])
    assert [t.delay_s for t in timings] == pytest.approx([0.41 - 0.065, 0.61 - 0.425])


def test_bidirectional_model_cannot_stream(tmp_path):
    asr_model, _ = asr_streaming.load_asr_model(make_asr_exp(tmp_path, "extbimamba_small"))
    with pytest.raises(ValueError, match="bidirectional and cannot stream"):
        asr_streaming.StreamingRecognizer.from_asr_model(asr_model)


def test_chunk_length_is_checked():
    assert asr_streaming.chunk_samples(20) == 320
    for bad in (10, 1001):
        with pytest.raises(ValueError, match="chunk_ms must be within 20..1000"):
            asr_streaming.chunk_samples(bad)


def test_load_errors_name_the_problem(tmp_path, mamba_exp):
    with pytest.raises(FileNotFoundError, match="no ASR model"):
        asr_streaming.load_asr_model(tmp_path / "missing.zip")
    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        asr_streaming.load_asr_model(tmp_path)
    wrong = tmp_path / "wrong.pth"
    torch.save({"encoder.nothing": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="does not fit the model"):
        asr_streaming.load_asr_model(mamba_exp / "config.yaml", wrong)
    with pytest.raises(ValueError, match="give the config.yaml"):
        asr_streaming.load_asr_model(mamba_exp / "valid.loss.best.pth")


def test_a_zip_packed_again_at_the_same_path_is_unpacked_again(mamba_exp, tmp_path, monkeypatch):
    """ESPnet's model cache keys a local zip by its path: the second model would decode as the first."""
    from espnet2.bin.pack import main as pack

    monkeypatch.setattr(asr_streaming, "UNPACK_CACHE", tmp_path / "cache")
    zip_path, weights = tmp_path / "asr.zip", tmp_path / "weights.pth"
    seen = []
    for scale in (1.0, 2.0):
        state = torch.load(mamba_exp / "valid.loss.best.pth", weights_only=True)
        torch.save({k: v * scale if v.is_floating_point() else v for k, v in state.items()}, weights)
        pack(["asr", "--asr_train_config", str(mamba_exp / "config.yaml"), "--asr_model_file", str(weights),
              "--outpath", str(zip_path)])  # fmt: skip
        model, _ = asr_streaming.load_asr_model(zip_path)
        seen.append(model.ctc.ctc_lo.weight.detach().clone())
    torch.testing.assert_close(seen[1], 2 * seen[0])


# The CLI ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wav_scp(tmp_path_factory, audio):
    root = tmp_path_factory.mktemp("wavs")
    lines = []
    for i, length in enumerate((28000, 9000)):
        path = root / f"utt{i}.wav"
        soundfile.write(path, audio[:length].numpy(), 16000, subtype="PCM_16")
        lines.append(f"utt{i} {path}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


def test_cli_writes_hypotheses_and_stats_equal_to_offline(mamba_exp, wav_scp, tmp_path, capsys):
    from espnet_mamba.audio import iter_wav_scp
    from espnet_mamba.bin import asr_stream

    config = tmp_path / "stream.yaml"
    config.write_text("chunk_ms: 100\ndecoder: greedy\n")
    out = tmp_path / "stream"
    asr_stream.main(["--config", str(config), "--model", str(mamba_exp), "--wav_scp", str(wav_scp),
                     "--output_dir", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "utt0 FINAL" in printed and "s  " in printed  # partials with their audio time
    stats = json.loads((out / "stream_stats.json").read_text())
    assert stats["chunk_ms"] == 100 and stats["utterances"] == 2
    for key in ("rtf", "chunk_compute_ms_median", "chunk_compute_ms_p95", "token_delay_ms_median"):
        assert stats[key] > 0, key
    texts = dict(line.split(" ", 1) for line in (out / "text").read_text().splitlines())
    trn = (out / "hyp_stream.trn").read_text().splitlines()
    assert trn == [f"{texts[u]} ({u})" for u in ("utt0", "utt1")]
    rows = [line.split() for line in (out / "token_delays.txt").read_text().splitlines()[1:]]
    assert len(rows) == stats["tokens"] and all(float(r[6]) > 0 for r in rows)
    assert "".join(r[2] for r in rows if r[0] == "utt0").replace("<space>", " ") == texts["utt0"]

    asr_model, args = asr_streaming.load_asr_model(mamba_exp)
    to_text = asr_streaming.TokenText(args)
    for utt_id, wav in iter_wav_scp(wav_scp):
        offline = asr_streaming.offline_decode(asr_model, wav, GreedyCTCDecoder()).final
        assert texts[utt_id] == to_text(offline.tokens)

    offline_out = tmp_path / "offline"
    asr_stream.main(["--offline", "--model", str(mamba_exp), "--wav_scp", str(wav_scp),
                     "--output_dir", str(offline_out), "--quiet"])  # fmt: skip
    assert (offline_out / "text").read_text() == (out / "text").read_text()
    assert (offline_out / "hyp_offline.trn").exists() and (offline_out / "offline_stats.json").exists()


def test_cli_streams_with_int8_linear_layers_close_to_float(mamba_exp, wav_scp, tmp_path):
    from espnet_mamba.bin import asr_stream

    texts = {}
    for kind, extra in (("float32", []), ("int8", ["--quantize_asr_model"])):
        out = tmp_path / kind
        asr_stream.main(["--model", str(mamba_exp), "--wav_scp", str(wav_scp), "--output_dir", str(out), "--quiet",
                         *extra])  # fmt: skip
        assert json.loads((out / "stream_stats.json").read_text())["linear_layers"] == kind
        texts[kind] = dict(line.split(" ", 1) for line in (out / "text").read_text().splitlines())
    for utt_id, reference in texts["float32"].items():
        assert len(reference) > 5
        assert editdistance.eval(texts["int8"][utt_id], reference) <= 0.2 * len(reference), utt_id


def test_cli_refuses_bad_chunk_and_unknown_config_keys(mamba_exp, wav_scp, tmp_path, capsys):
    from espnet_mamba.bin import asr_stream

    with pytest.raises(SystemExit, match="chunk_ms must be within"):
        asr_stream.main(["--model", str(mamba_exp), "--wav_scp", str(wav_scp), "--output_dir", str(tmp_path),
                         "--chunk_ms", "5"])  # fmt: skip
    config = tmp_path / "bad.yaml"
    config.write_text("chunk_size: 100\n")
    with pytest.raises(SystemExit):
        asr_stream.main(["--config", str(config), "--model", str(mamba_exp), "--wav_scp", str(wav_scp),
                         "--output_dir", str(tmp_path)])  # fmt: skip
    assert "unknown options ['chunk_size']" in capsys.readouterr().err
    for chunk_ms, message in (("160,320", "several lengths are for benchmark mode"), ("x", "must be a length in ms")):
        with pytest.raises(SystemExit):
            asr_stream.parse_args(["--model", "m", "--wav_scp", "w", "--output_dir", "o", "--chunk_ms", chunk_ms])
        assert message in capsys.readouterr().err
    config.write_text("output_dir: out\nchunk_ms: [20, 160]\nbench_presets: mamba_small\n")
    args = asr_stream.parse_args(["--config", str(config)])  # output_dir from the config, the list joined
    assert args.output_dir == Path("out") and args.chunk_ms == "20,160"


def test_benchmark_mode_compares_mamba_and_causal_transformer(tmp_path):
    from espnet_mamba.bin import asr_stream

    rows = asr_stream.benchmark(asr_stream.parse_args([
        "--bench_presets", "mamba_small,causal_transformer_small", "--bench_seconds", "1",
        "--chunk_ms", "200", "--bench_repeats", "3", "--output_dir", str(tmp_path),
    ]))  # fmt: skip
    assert [r["preset"] for r in rows] == ["mamba_small", "causal_transformer_small"]
    for row in rows:
        assert row["rtf"] > 0 and row["chunk_compute_ms_p95"] >= row["chunk_compute_ms_median"] > 0
        assert len(row["rtf_runs"]) == 3 and row["rtf"] == sorted(row["rtf_runs"])[1]  # the median run
    assert json.loads((tmp_path / "stream_benchmark.json").read_text()) == rows
    row = asr_streaming.benchmark_preset("mamba_small", 1, 200, quantize=True)
    assert row["linear_layers"] == "int8" and row["rtf"] > 0 and rows[0]["linear_layers"] == "float32"
    with pytest.raises(ValueError, match="bidirectional"):
        asr_streaming.benchmark_preset("extbimamba_small", 1, 200)
    with pytest.raises(ValueError, match="repeats"):
        asr_streaming.benchmark_preset("mamba_small", 1, 200, repeats=0)
    with pytest.raises(ValueError, match="make no chunk of 200"):
        asr_streaming.benchmark_preset("mamba_small", 0, 200)


# Fine-tuning config -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packed_ssl(tmp_path_factory):
    """A packed SSL model (espnet2.bin.pack ssl) of a tiny causal Mamba, random weights."""
    from espnet2.bin.pack import main as pack

    root = tmp_path_factory.mktemp("ssl")
    config = yaml.safe_load((REPO / "egs2/mini_an4/ssl1/conf/train_ssl_iter0.yaml").read_text())
    config["encoder_conf"].update(conv_layers=[list(layer) for layer in TINY_CNN], ssm_impl="torch")
    (root / "ssl.yaml").write_text(yaml.safe_dump(config))
    (root / "tokens.txt").write_text("".join(f"{i}\n" for i in range(20)) + "<unk>\n")
    MambaSSLTask.main(cmd=[
        "--config", str(root / "ssl.yaml"), "--dry_run", "true", "--iterator_type", "none",
        "--output_dir", str(root / "exp"), "--token_list", str(root / "tokens.txt"), "--token_type", "word",
    ])  # fmt: skip
    torch.manual_seed(3)
    model, _ = MambaSSLTask.build_model_from_file(root / "exp/config.yaml", None, "cpu")
    torch.save(model.state_dict(), root / "exp/valid.loss.best.pth")
    pack(["ssl", "--ssl_train_config", str(root / "exp/config.yaml"),
          "--ssl_model_file", str(root / "exp/valid.loss.best.pth"), "--outpath", str(root / "ssl.zip")])
    return root / "ssl.zip", model


def test_finetune_config_carries_the_pretrained_encoder(packed_ssl, tmp_path):
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model

    from espnet_mamba.finetuning import write_finetune_config

    zip_path, ssl_model = packed_ssl
    asr_config = REPO / "egs2/mini_an4/asr1/conf/train_asr.yaml"
    out = write_finetune_config(asr_config, zip_path, tmp_path / "train_config.yaml", tmp_path / "unpacked")
    config = yaml.safe_load(out.read_text())
    ssl_conf = ssl_model.encoder.backbone.cfg
    assert config["encoder_conf"]["conv_layers"] == [list(layer) for layer in TINY_CNN]
    assert config["encoder_conf"]["freeze_cnn"] is True and config["encoder_conf"]["freeze_encoder_steps"] == 5
    assert "pretrained" not in config["encoder_conf"]
    [init_param] = config["init_param"]
    assert init_param.endswith(":encoder:encoder") and Path(init_param.split(":")[0]).exists()

    (tmp_path / "tokens.txt").write_text("".join(t + "\n" for t in TOKENS))
    MambaASRTask.main(cmd=["--config", str(out), "--dry_run", "true", "--iterator_type", "none",
                           "--output_dir", str(tmp_path / "asr"), "--token_list", str(tmp_path / "tokens.txt"),
                           "--token_type", "char"])  # fmt: skip
    asr_model, _ = MambaASRTask.build_model_from_file(tmp_path / "asr/config.yaml", None, "cpu")
    assert asr_model.encoder.backbone.cfg == ssl_conf
    load_pretrained_model(init_param, asr_model, ignore_init_mismatch=False)  # what training does
    for key, value in ssl_model.encoder.state_dict().items():
        assert torch.equal(asr_model.encoder.state_dict()[key], value), key


def test_load_pretrained_reads_a_zip_packed_with_absolute_paths(packed_ssl):
    """espnet2.bin.pack lists files outside its working directory by absolute path in meta.yaml
    and stores them without the leading slash (the fixture packs from tmp)."""
    zip_path, ssl_model = packed_ssl
    with zipfile.ZipFile(zip_path) as archive:
        meta = yaml.safe_load(archive.read("meta.yaml"))
    assert Path(meta["files"]["ssl_model_file"]).is_absolute()
    model = load_pretrained(zip_path)
    for key, value in ssl_model.encoder.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


def test_finetune_config_refuses_a_mismatch(packed_ssl, tmp_path):
    from espnet_mamba.finetuning import finetune_config

    ssl_config = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_small", "d_model": 64}}
    asr = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_base"}}
    with pytest.raises(ValueError, match="preset mamba_base but the pretrained model is mamba_small"):
        finetune_config(asr, ssl_config, "ssl.pth")
    asr = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_small", "d_model": 128, "dropout": 0.2}}
    with pytest.raises(ValueError, match="d_model = 128 in the ASR config, but the pretrained model has 64"):
        finetune_config(asr, ssl_config, "ssl.pth")
    with pytest.raises(ValueError, match="encoder 'conformer'"):
        finetune_config({"encoder": "conformer"}, ssl_config, "ssl.pth")


def test_finetune_config_takes_the_asr_configs_memory_dropout_and_dither_settings():
    from espnet_mamba.finetuning import finetune_config

    ssl_config = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_small", "d_model": 64}}
    settings = {"dropout": 0.2, "dither": 3e-5, "recompute_cnn": True, "recompute_blocks": True, "compile_cnn": True}
    asr = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_small", **settings}}
    encoder_conf = finetune_config(asr, ssl_config, "ssl.pth")["encoder_conf"]
    assert encoder_conf == {"preset": "mamba_small", "d_model": 64, **settings}


# Packing, Speech2Text, the Hub ----------------------------------------------------------------


@pytest.fixture(scope="module")
def packed_asr(mamba_exp, tmp_path_factory):
    from espnet2.bin.pack import main as pack

    root = tmp_path_factory.mktemp("packed")
    card = root / "README.md"
    card.write_text("# tiny test model\n")
    pack(["asr", "--asr_train_config", str(mamba_exp / "config.yaml"),
          "--asr_model_file", str(mamba_exp / "valid.loss.best.pth"), "--option", str(card),
          "--outpath", str(root / "asr.zip")])  # fmt: skip
    return root / "asr.zip"


def test_speech2text_transcribes_with_the_packed_zip(packed_asr, mamba_exp, wav_scp, tmp_path):
    from espnet2.bin.asr_inference import Speech2Text
    from espnet_model_zoo.downloader import ModelDownloader

    files = ModelDownloader(tmp_path / "cache").download_and_unpack(str(packed_asr))
    speech2text = Speech2Text(**files, ctc_weight=1.0, beam_size=1, lm_weight=0.0)
    unpacked = Speech2Text(mamba_exp / "config.yaml", mamba_exp / "valid.loss.best.pth",
                           ctc_weight=1.0, beam_size=1, lm_weight=0.0)  # fmt: skip
    wav_path = Path(wav_scp.read_text().split()[1])
    wav, rate = soundfile.read(wav_path)
    text = speech2text(wav)[0][0]
    assert rate == 16000 and text and text == unpacked(wav)[0][0]
    assert isinstance(text, str)

    streamed = asr_streaming.load_asr_model(packed_asr)  # the streaming loader reads the zip too
    assert streamed[0].encoder.backbone.cfg.causal


def test_speech2text_runs_the_encoder_with_espnets_int8_option(packed_asr, wav_scp, tmp_path):
    from espnet2.bin.asr_inference import Speech2Text
    from espnet_model_zoo.downloader import ModelDownloader
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    files = ModelDownloader(tmp_path / "cache").download_and_unpack(str(packed_asr))
    options = dict(ctc_weight=1.0, beam_size=1, lm_weight=0.0)
    plain, quantized = Speech2Text(**files, **options), Speech2Text(**files, **options, quantize_asr_model=True)
    mixer = quantized.asr_model.encoder.backbone.layers[0].mixer
    assert type(mixer.in_proj) is Int8Linear and type(mixer.dt_proj) is Int8Linear  # every linear layer
    wav, _ = soundfile.read(Path(wav_scp.read_text().split()[1]))
    reference = plain(wav)[0][0]
    assert len(reference) > 5
    assert editdistance.eval(quantized(wav)[0][0], reference) <= 0.2 * len(reference)


def test_hub_upload_fails_clearly_without_network(packed_asr, monkeypatch):
    from espnet_mamba import model_zoo
    from espnet_mamba.bin import hf_upload

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with mock.patch("huggingface_hub.HfApi.create_repo", side_effect=OSError("Name or service not known")):
        with pytest.raises(model_zoo.UploadError, match="Needs network access to huggingface.co"):
            model_zoo.upload_packed(packed_asr, "someone/tiny-asr")
    with pytest.raises(SystemExit, match="hf_upload: could not upload"):  # the real client, offline mode
        hf_upload.main(["--packed", str(packed_asr), "--hf_repo", "someone/tiny-asr"])
    with pytest.raises(ValueError, match="user/name"):
        model_zoo.upload_packed(packed_asr, "no-slash")


def test_model_card_describes_the_backbone_as_encoder_or_as_frozen_upstream(mamba_exp, packed_ssl, tmp_path):
    """A CTC model's backbone is its encoder; a Conformer downstream's is the s3prl upstream its
    frontend names, and its own model file (a Conformer) is not loaded as Mamba-HuBERT."""
    from espnet_mamba.bin.model_card import model_card

    card = model_card(mamba_exp, mamba_exp / "valid.loss.best.pth", [], None, None)
    assert "# Mamba-HuBERT (asr): exp" in card and "Backbone: `mamba`" in card and "load_pretrained" in card
    exp = tmp_path / "asr_conformer"
    exp.mkdir()
    upstream = {"upstream": "mamba_hubert", "path_or_url": str(packed_ssl[0])}
    config = {"encoder": "conformer", "frontend": "s3prl", "ctc_conf": {}, "frontend_conf": {"frontend_conf": upstream}}
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    card = model_card(exp, exp / "valid.acc.best.pth", [], None, None)  # the file need not exist
    assert "Backbone: `mamba`" in card and "frozen s3prl upstream" in card and "`conformer` encoder" in card
    (exp / "config.yaml").write_text(yaml.safe_dump({"encoder": "conformer", "frontend": "default"}))
    with pytest.raises(ValueError, match="holds no Mamba-HuBERT: encoder 'conformer'"):
        model_card(exp, exp / "valid.acc.best.pth", [], None, None)


def test_hub_folder_has_the_card_at_its_root(packed_asr, tmp_path):
    from espnet_mamba.model_zoo import stage_packed

    folder = stage_packed(packed_asr, tmp_path / "repo")
    assert (folder / "README.md").read_text() == "# tiny test model\n"
    assert (folder / "meta.yaml").exists()
    uploaded = {}

    def fake_upload(self, *, repo_id, folder_path, commit_message):
        uploaded.update(repo=repo_id, files=sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file()))
        return mock.Mock(commit_url="https://huggingface.co/someone/tiny-asr/commit/1")

    from espnet_mamba import model_zoo

    with mock.patch("huggingface_hub.HfApi.create_repo"), \
            mock.patch("huggingface_hub.HfApi.upload_folder", fake_upload):
        url = model_zoo.upload_packed(packed_asr, "someone/tiny-asr")
    assert url.endswith("/commit/1") and uploaded["repo"] == "someone/tiny-asr"
    assert {"README.md", "meta.yaml", "config.yaml", "valid.loss.best.pth"} <= set(uploaded["files"])
    with zipfile.ZipFile(packed_asr) as archive:
        assert len(archive.namelist()) + 1 == len(uploaded["files"])  # + the card at the root


# Scoring and documents -----------------------------------------------------------------------


def test_error_rates_from_text_and_trn(tmp_path):
    from espnet_mamba.asr_scoring import error_rates, read_transcripts, results_table

    (tmp_path / "ref").write_text("u1 THE CAT SAT\nu2 ON THE MAT\n")
    (tmp_path / "hyp.trn").write_text("THE BAT SAT DOWN (u1)\n (u2)\n")
    rates = error_rates(read_transcripts(tmp_path / "ref"), read_transcripts(tmp_path / "hyp.trn"))
    assert (rates["substitutions"], rates["deletions"], rates["insertions"], rates["words"]) == (1, 3, 1, 6)
    assert rates["wer"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert rates["sentence_error"] == 100.0
    assert "| test | 2 | 6 | 83.33 |" in results_table([("test", rates)])
    with pytest.raises(ValueError, match="have no hypothesis"):
        error_rates({"u1": "A", "u3": "B"}, {"u1": "A"})
    # a Kaldi line whose last word is parenthesised stays Kaldi: the format is the whole file's
    (tmp_path / "text").write_text("u1 hello (world)\nu2 plain words\n")
    assert read_transcripts(tmp_path / "text") == {"u1": "hello (world)", "u2": "plain words"}


def test_data_dir_writer_sorts_every_table_and_refuses_inconsistent_ones(tmp_path):
    from espnet_mamba.audio import read_scp, write_data_dir

    out = write_data_dir(tmp_path / "d", wav_scp={"s2-b": "/w/b.wav", "s1-a": "/w/a.wav", "s1-c": "/w/c.wav"},
                         utt2spk={"s1-c": "s1", "s2-b": "s2", "s1-a": "s1"},
                         text={"s1-c": "C", "s1-a": "A B", "s2-b": "B"})
    assert (out / "wav.scp").read_text() == "s1-a /w/a.wav\ns1-c /w/c.wav\ns2-b /w/b.wav\n"
    assert (out / "spk2utt").read_text() == "s1 s1-a s1-c\ns2 s2-b\n"
    assert read_scp(out / "text") == [("s1-a", "A B"), ("s1-c", "C"), ("s2-b", "B")]
    assert sorted(p.name for p in out.iterdir()) == ["spk2utt", "text", "utt2spk", "wav.scp"]
    # with segments, wav.scp lists recordings and utt2spk the segments
    write_data_dir(tmp_path / "seg", wav_scp={"rec": "/w/rec.wav"}, utt2spk={"u2": "s", "u1": "s"},
                   segments={"u2": "rec 1.0 2.0", "u1": "rec 0.0 1.0"})
    assert (tmp_path / "seg" / "segments").read_text() == "u1 rec 0.0 1.0\nu2 rec 1.0 2.0\n"
    for tables, problem in (
        (dict(wav_scp={"a": "/a.wav"}, utt2spk={"b": "s"}), "utt2spk and wav.scp list different utterances"),
        (dict(wav_scp={"r": "/r.wav"}, utt2spk={"r": "s"}, segments={"u": "r 0 1"}), "utt2spk and segments"),
        (dict(wav_scp={"a b": "/a.wav"}, utt2spk={"a b": "s"}), "holds whitespace"),
        (dict(wav_scp={"a": "/a.wav"}, utt2spk={"a": "s"}, text={"a": " "}), "text: a: value ' ' is empty"),
        (dict(wav_scp={"a": "/a.wav"}, utt2spk={"a": "s"}, text={"a": "x\ny"}), "spans lines"),
    ):
        with pytest.raises(ValueError, match=problem):
            write_data_dir(tmp_path / "bad", **tables)
    assert not (tmp_path / "bad").exists()


def write_recording(path: Path, seconds: float, value: float):
    soundfile.write(path, np.full(int(seconds * 16000), value, dtype=np.float32), 16000, subtype="PCM_16")


def test_documents_join_consecutive_segments_of_a_recording(tmp_path):
    from espnet_mamba.bin import make_documents

    data = tmp_path / "talks"
    data.mkdir()
    write_recording(tmp_path / "talkA.wav", 30, 0.25)
    write_recording(tmp_path / "talkB.wav", 10, -0.5)
    (data / "wav.scp").write_text(f"talkA {tmp_path / 'talkA.wav'}\ntalkB {tmp_path / 'talkB.wav'}\n")
    segments = [("a3", "talkA", 20, 29), ("a1", "talkA", 1, 9), ("a2", "talkA", 10, 18), ("b1", "talkB", 0, 5)]
    (data / "segments").write_text("".join(f"{u} {r} {s} {e}\n" for u, r, s, e in segments))
    (data / "text").write_text("a1 one\na2 two\na3 three\nb1 bee\n")
    (data / "utt2spk").write_text("a1 A\na2 A\na3 A\nb1 B\n")
    out = tmp_path / "docs"
    make_documents.main(["--data_dir", str(data), "--out_dir", str(out), "--max_minutes", str(17 / 60)])
    texts = dict(line.split(" ", 1) for line in (out / "text").read_text().splitlines())
    assert texts == {"talkA-doc0001": "one two", "talkA-doc0002": "three", "talkB-doc0001": "bee"}
    wav_scp = dict(line.split() for line in (out / "wav.scp").read_text().splitlines())
    audio, rate = soundfile.read(wav_scp["talkA-doc0001"])
    assert rate == 16000 and len(audio) == 16 * 16000 and np.allclose(audio, 0.25, atol=1e-4)
    assert (out / "doc_segments").read_text().splitlines() == [
        "a1 talkA-doc0001 0.000 8.000", "a2 talkA-doc0001 8.000 16.000",
        "a3 talkA-doc0002 0.000 9.000", "b1 talkB-doc0001 0.000 5.000",
    ]  # fmt: skip
    assert (out / "spk2utt").read_text() == "talkA talkA-doc0001 talkA-doc0002\ntalkB talkB-doc0001\n"

    single = tmp_path / "utts"
    make_documents.main(["--data_dir", str(data), "--out_dir", str(single), "--max_minutes", "0"])
    assert (single / "text").read_text() == "a1 one\na2 two\na3 three\nb1 bee\n"


def test_documents_of_per_utterance_files_follow_the_speaker(tmp_path):
    from espnet_mamba.documents import plan_documents, read_data_dir

    data = tmp_path / "data"
    data.mkdir()
    for utt, seconds in (("s1-c1-0002", 2), ("s1-c1-0001", 3), ("s2-c1-0001", 1)):
        write_recording(tmp_path / f"{utt}.wav", seconds, 0.1)
    utts = ("s1-c1-0001", "s1-c1-0002", "s2-c1-0001")
    (data / "wav.scp").write_text("".join(f"{u} {tmp_path / u}.wav\n" for u in utts))
    (data / "text").write_text("s1-c1-0001 A\ns1-c1-0002 B\ns2-c1-0001 C\n")
    (data / "utt2spk").write_text("s1-c1-0001 s1-c1\ns1-c1-0002 s1-c1\ns2-c1-0001 s2-c1\n")
    documents = plan_documents(read_data_dir(data), 60)
    assert [[u.utt_id for u in d] for d in documents] == [["s1-c1-0001", "s1-c1-0002"], ["s2-c1-0001"]]


def test_documents_refuse_pipes_and_missing_transcripts(tmp_path):
    from espnet_mamba.documents import read_data_dir

    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("u1 sph2pipe -f wav u1.sph |\n")
    (data / "text").write_text("u1 A\n")
    (data / "utt2spk").write_text("u1 s\n")
    with pytest.raises(ValueError, match="is a piped command"):
        read_data_dir(data)
    (data / "wav.scp").write_text("u1 u1.wav\nu2 u2.wav\n")
    (data / "utt2spk").write_text("u1 s\nu2 s\n")
    with pytest.raises(ValueError, match="no transcript for 1 utterances"):
        read_data_dir(data)
