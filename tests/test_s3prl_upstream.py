"""The s3prl compatibility shims, the mamba_hubert upstream, and ESPnet's s3prl frontend on it."""

import argparse
import builtins
import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import soundfile
import torch
import yaml

import s3prl_upstream  # noqa: F401  (shims + registration before s3prl)
import espnet_mamba
from conftest import TINY_CNN
from espnet_mamba.espnet.checkpoint import save_pretrained
from s3prl_upstream import compat, dataset_caches, run_downstream, sox_effects
from s3prl_upstream.expert import UpstreamExpert

SR = 16000
TINY = dict(d_model=32, num_layers=2, ssm_impl="torch", conv_layers=TINY_CNN)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_pretrained(espnet_mamba.build_model("mamba_small", **TINY), path)
    return path


def tone(seconds, freq=440.0, amplitude=0.5):
    t = torch.arange(int(seconds * SR)) / SR
    return amplitude * torch.sin(2 * math.pi * freq * t)


# --- compat shims ------------------------------------------------------------------------


def test_set_audio_backend_is_a_no_op():
    import torchaudio

    assert torchaudio.set_audio_backend("sox_io") is None


def test_sox_effects_module_is_importable_as_torchaudio_sox_effects():
    from torchaudio.sox_effects import apply_effects_file, apply_effects_tensor

    assert apply_effects_file is sox_effects.apply_effects_file
    assert apply_effects_tensor is sox_effects.apply_effects_tensor


def test_channels_rate_gain_as_the_ks_dataset_uses_them(tmp_path):
    stereo = torch.stack([tone(1.0), torch.zeros(SR)])
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), stereo.t().numpy(), SR)
    wav, rate = sox_effects.apply_effects_file(path, [["channels", "1"], ["rate", "8000"], ["gain", "-6.0"]])
    assert rate == 8000 and wav.shape == (1, 8000)
    expected_peak = 0.25 * 10 ** (-6 / 20)  # channel mean halves the tone, then -6 dB
    assert wav.abs().max().item() == pytest.approx(expected_peak, rel=0.02)


def test_norm_scales_the_peak_to_the_level():
    wav, _ = sox_effects.apply_effects_tensor(tone(0.1, amplitude=0.2)[None], SR, [["norm", "-3"]])
    assert wav.abs().max().item() == pytest.approx(10 ** (-3 / 20), rel=1e-4)


def test_silence_removes_leading_and_long_quiet_runs_and_short_bursts():
    quiet = lambda s: torch.zeros(int(s * SR))  # noqa: E731
    # 0.5 s quiet | 1 s tone | 0.3 s quiet | 0.05 s burst (shorter than 0.1 s) | 0.5 s quiet | 1 s tone | 0.2 s quiet
    wav = torch.cat([quiet(0.5), tone(1.0), quiet(0.3), tone(0.05), quiet(0.5), tone(1.0), quiet(0.2)])[None]
    out, _ = sox_effects.apply_effects_tensor(wav, SR, [["silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%"]])
    # both tones kept, each with the 20 ms the RMS window stays loud after it; the rest dropped
    assert out.shape[1] == pytest.approx(2 * (SR + 0.02 * SR), abs=10)
    leading_only, _ = sox_effects.apply_effects_tensor(wav, SR, [["silence", "1", "0.1", "1%"]])
    assert leading_only.shape[1] == pytest.approx(wav.shape[1] - 0.5 * SR, abs=10)


@pytest.mark.parametrize(
    "effects, message",
    [([["vad", "-T", "0.25"]], "vad"), ([["silence", "2", "0.1", "1%"]], "silence"), ([["gain", "-n"]], "gain")],
)
def test_unsupported_effects_raise_clearly(effects, message):
    with pytest.raises(ValueError, match=message):
        sox_effects.apply_effects_tensor(tone(0.1)[None], SR, effects)


def test_torchaudio_load_reads_without_torchcodec(tmp_path):
    import torchaudio

    data = np.stack([np.linspace(-0.5, 0.5, 1000), np.zeros(1000)], axis=1).astype(np.float32)
    soundfile.write(str(tmp_path / "a.flac"), data, SR)
    wav, rate = torchaudio.load(str(tmp_path / "a.flac"), frame_offset=100, num_frames=200)
    assert rate == SR and wav.shape == (2, 200) and wav.dtype == torch.float32
    assert torch.allclose(wav[0], torch.from_numpy(data[100:300, 0]), atol=1e-4)


def test_huggingface_hub_stand_ins_import_and_fail_clearly_when_used():
    from huggingface_hub import HfFolder, Repository

    with pytest.raises(RuntimeError, match="removed in huggingface_hub 1.0"):
        Repository(local_dir="x", clone_from="y")
    with pytest.raises(RuntimeError, match="upload_folder"):
        HfFolder.save_token("token")


def test_runner_checkpoints_with_an_argparse_namespace_load_with_weights_only(tmp_path):
    path = tmp_path / "states-1.ckpt"
    torch.save({"Args": argparse.Namespace(upstream="mamba_hubert", seed=1), "Step": 1}, path)
    loaded = torch.load(path, map_location="cpu")  # weights_only=True is torch's default
    assert loaded["Args"].upstream == "mamba_hubert"


def test_missing_tensorboardx_raises_an_import_error_that_says_how_to_fix(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match="pip install tensorboardX"):
        compat.require_tensorboardx()


def test_catalyst_sampler_stand_in_splits_the_drawn_indices_across_processes():
    from catalyst.data.sampler import DistributedSamplerWrapper

    sampler = list(range(10))  # any sampler: drawn indices 0..9
    shares = [list(DistributedSamplerWrapper(sampler, num_replicas=2, rank=r, shuffle=False)) for r in (0, 1)]
    assert sorted(shares[0] + shares[1]) == list(range(10)) and len(shares[0]) == 5


def test_apply_is_idempotent():
    import torchaudio

    loader = torchaudio.load
    compat.apply()
    assert torchaudio.load is loader and sys.modules["torchaudio.sox_effects"] is sox_effects


# --- the upstream ------------------------------------------------------------------------


def test_s3prl_upstream_finds_mamba_hubert_with_its_layers_and_rate(tiny_ckpt):
    from s3prl.nn import S3PRLUpstream

    assert "mamba_hubert" in S3PRLUpstream.available_names()
    upstream = S3PRLUpstream("mamba_hubert", path_or_url=str(tiny_ckpt)).eval()
    assert upstream.num_layers == TINY["num_layers"] + 1
    assert upstream.hidden_sizes == [32] * 3 and upstream.downsample_rates == [320] * 3
    wavs, lens = torch.randn(2, SR), torch.tensor([SR, SR // 2])
    with torch.no_grad():
        hidden_states, hidden_lens = upstream(wavs, lens)
    assert len(hidden_states) == 3
    assert all(h.shape == (2, 50, 32) for h in hidden_states)
    assert hidden_lens[0].tolist() == [50, 25]


def test_expert_matches_the_backbone_and_pads_a_batch(tiny_ckpt):
    expert = UpstreamExpert(ckpt=str(tiny_ckpt)).eval()
    wavs = [torch.randn(8000), torch.randn(4800)]
    with torch.no_grad():
        out = expert(wavs)
        alone = [expert.model.extract_features(wav[None])[0] for wav in wavs]
    assert len(out["hidden_states"]) == 3 and out["last_hidden_state"] is out["hidden_states"][-1]
    assert all(h.shape == (2, 24, 32) for h in out["hidden_states"])  # (8000 - 400) // 320 + 1 frames
    assert torch.allclose(out["hidden_states"][-1][0], alone[0][-1][0], atol=1e-5)
    # the padded utterance: its 14 real frames as alone ((4800 - 400) // 320 + 1)
    assert torch.allclose(out["hidden_states"][-1][1, :14], alone[1][-1][0], atol=1e-5)
    assert expert.get_downsample_rates("hidden_states") == 320


def test_model_config_builds_a_random_model_from_a_preset_or_yaml(tmp_path):
    conf = tmp_path / "tiny.yaml"
    conf.write_text(yaml.safe_dump({"preset": "mamba_small", **TINY}))
    expert = UpstreamExpert(model_config=str(conf))
    assert expert.model.cfg.d_model == 32 and len(expert.model.backbone.layers) == 2
    assert UpstreamExpert(model_config="mamba_small", num_layers=1, d_model=16).model.cfg.num_layers == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs ckpt"),
        ({"ckpt": "a.pt", "model_config": "mamba_small"}, "not both"),
        ({"model_config": "no_such_preset"}, "neither a preset"),
        ({"model_config": "mamba_small", "colour": "red"}, "unknown options"),
    ],
)
def test_bad_upstream_arguments_raise_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UpstreamExpert(**kwargs)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not an espnet_mamba checkpoint"):
        UpstreamExpert(ckpt=str(path))


@pytest.mark.parametrize(
    "wavs, message",
    [
        ([torch.randn(2, 8000)], "1-D"),
        ([torch.randn(8000), torch.full((8000,), float("nan"))], "NaN"),
        ([torch.randn(100)], "at least 400"),
        ([], "non-empty list"),
    ],
)
def test_bad_audio_raises_value_errors(tiny_ckpt, wavs, message):
    expert = UpstreamExpert(ckpt=str(tiny_ckpt))
    with pytest.raises(ValueError, match=message):
        expert(wavs)


def test_espnet_s3prl_frontend_builds_and_runs_on_mamba_hubert(tiny_ckpt):
    from espnet2.asr.frontend.s3prl import S3prlFrontend

    frontend = S3prlFrontend(
        frontend_conf={"upstream": "mamba_hubert", "path_or_url": str(tiny_ckpt)}, multilayer_feature=True
    )
    assert frontend.output_size() == 32 and frontend.hop_length == 320
    feats, feats_lens = frontend(torch.randn(2, SR), torch.tensor([SR, 12000]))
    assert feats.shape == (2, 50, 32) and feats_lens.tolist() == [50, 38]
    assert frontend.featurizer.weights.shape == (3,)  # a learnable weighted sum of all layers


# --- run_downstream helpers -------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--hub", "huggingface"], ["--push_to_hf_hub=True"], ["--push_to_hf_hub", "False"]])
def test_hub_options_that_cannot_work_are_refused(argv):
    with pytest.raises(ValueError, match="huggingface_hub"):
        run_downstream.check_options(["-m", "train", *argv])
    run_downstream.check_options(["-m", "train", "--hub", "torch"])


def test_the_clone_ctc_corpus_package_is_used_when_run_from_a_clone(tmp_path, isolated_ctc_corpus):
    corpus = tmp_path / "downstream" / "ctc" / "corpus"
    corpus.mkdir(parents=True)
    (corpus / "toy_corpus_marker.py").write_text("NAME = 'from the clone'\n")
    assert not run_downstream.use_clone_ctc_corpus(tmp_path / "elsewhere")
    assert run_downstream.use_clone_ctc_corpus(tmp_path)
    from s3prl.downstream.ctc.corpus import toy_corpus_marker

    assert toy_corpus_marker.NAME == "from the clone"


def test_sid_and_asv_caches_go_to_a_directory_per_corpus(tmp_path, monkeypatch):
    monkeypatch.setenv(dataset_caches.CACHE_ENV, str(tmp_path / "cache"))
    datarc = {"file_path": str(tmp_path / "vox_a"), "meta_data": str(tmp_path / "split.txt")}
    dataset_caches.isolate("voxceleb1", {"downstream_expert": {"datarc": datarc}})
    from s3prl.downstream.voxceleb1 import dataset as sid_dataset

    first = sid_dataset.CACHE_PATH
    datarc["file_path"] = str(tmp_path / "vox_b")
    dataset_caches.isolate("voxceleb1", {"downstream_expert": {"datarc": datarc}})
    assert first.startswith(str(tmp_path / "cache" / "voxceleb1")) and sid_dataset.CACHE_PATH != first

    dataset_caches.isolate("sv_voxceleb1", {"downstream_expert": {"datarc": {"file_path": str(tmp_path / "vox_a")}}})
    from s3prl.downstream.sv_voxceleb1 import dataset as asv_dataset

    assert asv_dataset.__file__.startswith(str(tmp_path / "cache" / "sv_voxceleb1"))


def test_atomic_torch_save_leaves_the_old_file_when_a_save_breaks_off(tmp_path):
    path = tmp_path / "states-2.ckpt"
    torch.save({"step": 1}, path)
    original = torch.save
    with run_downstream.atomic_torch_save():
        assert torch.save is not original
        with pytest.raises(Exception):
            torch.save({"step": 2, "unsaveable": lambda: None}, path)  # fails while it writes
        assert torch.load(path, weights_only=True) == {"step": 1}
        assert [p.name for p in tmp_path.iterdir()] == [path.name]
        torch.save({"step": 2}, str(path))
    assert torch.save is original
    assert torch.load(path, weights_only=True) == {"step": 2}


def test_runner_trains_with_atomic_saves_and_keeps_two_checkpoints(caplog):
    class S3prlRunner:
        def __init__(self, args, config):
            self.config = config

        def train(self):
            self.save_in_train = torch.save

    runner = run_downstream._runner_with_fixes(S3prlRunner)(
        types.SimpleNamespace(downstream="speech_commands"), {"runner": {"max_keep": 1}}
    )
    assert runner.config["runner"]["max_keep"] == 2 and "max_keep 1 -> 2" in caplog.text
    runner.train()
    assert runner.save_in_train is not torch.save and runner.save_in_train.__name__ == "save_atomically"
    config = {"runner": {"max_keep": 5}}
    run_downstream.keep_two_checkpoints(config)
    assert config["runner"]["max_keep"] == 5


def test_main_restores_builtins_isinstance(tmp_path):
    before = builtins.isinstance
    with pytest.raises(SystemExit):  # argparse: -m is required
        run_downstream.main(["-p", str(tmp_path)])
    assert builtins.isinstance is before
