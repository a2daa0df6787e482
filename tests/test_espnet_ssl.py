"""ESPnet integration: registration (also in spawned workers), the SSL model built by the
task, the pretraining loss, and checkpoints that move between ESPnet and espnet_mamba."""

import multiprocessing
from pathlib import Path

import pytest
import torch
import yaml

import espnet_mamba
from espnet_mamba.espnet import checkpoint
from espnet_mamba.espnet.masking import apply_masking
from espnet_mamba.espnet.tasks import MambaASRTask, MambaSSLTask

REPO = Path(__file__).resolve().parents[1]
TINY_SSL_CONFIG = REPO / "egs2/mini_an4/ssl1/conf/train_ssl_iter0.yaml"
N_CLUSTERS = 20


@pytest.fixture
def ssl_args(tmp_path):
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{i}\n" for i in range(N_CLUSTERS)) + "<unk>\n")
    parser = MambaSSLTask.get_parser()
    return parser.parse_args(
        ["--config", str(TINY_SSL_CONFIG), "--token_list", str(tokens), "--output_dir", str(tmp_path)]
    )


def test_registered_in_ssl_and_asr_tasks():
    from espnet2.tasks import asr, ssl

    assert ssl.encoder_choices.get_class("mamba_hubert").__name__ == "MambaHuBERTEncoder"
    assert ssl.model_choices.get_class("mamba_hubert").__name__ == "MambaHuBERTSSLModel"
    assert asr.encoder_choices.get_class("mamba_hubert").__name__ == "MambaHuBERTEncoder"
    assert "mamba_hubert" in MambaSSLTask.get_parser().format_help()
    assert "mamba_hubert" in MambaASRTask.get_parser().format_help()


def test_registration_survives_spawned_worker():
    """ESPnet's DDP launcher spawns workers that unpickle the task class: ours registers."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from spawn_probe import registered_in_child

    from espnet2.tasks.ssl import SSLTask

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ours = pool.apply(registered_in_child, (MambaSSLTask,))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        plain = pool.apply(registered_in_child, (SSLTask,))
    assert ours == {"ssl_encoder": True, "ssl_model": True, "asr_encoder": True, "task": "MambaSSLTask"}
    assert plain["ssl_encoder"] is False  # the control: without our task class, nothing registers


def test_task_builds_exactly_the_backbone(ssl_args):
    model = MambaSSLTask.build_model(ssl_args)
    conf = yaml.safe_load(TINY_SSL_CONFIG.read_text())["encoder_conf"]
    reference = espnet_mamba.build_model(**conf).backbone
    ours = model.encoder.backbone
    assert ours.cfg == reference.cfg
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    assert len(model.encoder.encoders) == conf["num_layers"]


def test_pretraining_loss_falls_on_repeated_batch(ssl_args):
    torch.manual_seed(0)
    model = MambaSSLTask.build_model(ssl_args).train()
    speech = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6400])
    frames = int(model.encoder.backbone.feature_extractor.output_lengths(lengths)[0])
    labels = torch.randint(0, N_CLUSTERS, (2, frames))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss, stats, _ = model(speech, lengths, labels, torch.tensor([frames, frames - 5]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert "hubert_acc_m_1" in stats


def test_encode_takes_frame_lengths_from_the_cpu_as_the_cnn_gives_them(ssl_args):
    # encode reads the lengths once, before the CNN, and masks and pads with frame lengths
    # computed on the CPU: the same masks and outputs as with the CNN's own lengths
    model = MambaSSLTask.build_model(ssl_args).eval()
    speech, lengths = torch.randn(3, 9000), torch.tensor([9000, 6431, 4000])
    torch.manual_seed(1)
    data = model.encode(speech, lengths)
    torch.manual_seed(1)
    x, cnn_lengths = model.encoder.embed(speech, lengths)
    assert torch.equal(model.encoder.frame_lengths(lengths), cnn_lengths)
    x, mask_info = apply_masking(model.util_modules["mask"], x, cnn_lengths)
    expected = model.encoder.encode(x, cnn_lengths)
    assert torch.equal(data["mask_info"]["mask_m"], mask_info["mask_m"]) and mask_info["mask_m"].any()
    assert torch.equal(data["encoder_output_lengths"], cnn_lengths)
    for ours, reference in zip(data["encoder_output"], expected[1:], strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def _espnet_exp(tmp_path, ssl_args):
    """An ESPnet SSL experiment directory: config.yaml + model .pth, as the trainer writes."""
    model = MambaSSLTask.build_model(ssl_args)
    exp = tmp_path / "exp"
    exp.mkdir()
    torch.save(model.state_dict(), exp / "valid.loss.best.pth")
    config = yaml.safe_load(TINY_SSL_CONFIG.read_text())
    config["token_list"] = [str(i) for i in range(N_CLUSTERS)] + ["<unk>"]
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    return model, exp


def test_espnet_checkpoint_loads_into_espnet_mamba(tmp_path, ssl_args):
    espnet_model, exp = _espnet_exp(tmp_path, ssl_args)
    ours = checkpoint.load_pretrained(exp / "valid.loss.best.pth").eval()
    also = checkpoint.load_pretrained(exp).eval()  # the experiment directory works too
    wav = torch.randn(1, 4000)
    espnet_model.eval()
    with torch.no_grad():
        x, lengths = espnet_model.encoder.embed(wav, torch.tensor([4000]))
        expected = espnet_model.encoder.encode(x, lengths)[-1]
        got = ours.extract_features(wav)[0][-1]
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(also.extract_features(wav)[0][-1], expected)
    torch.testing.assert_close(ours.mask_embedding, espnet_model.util_modules["mask"].mask_embedding)
    torch.testing.assert_close(
        ours.label_embeddings.weight, espnet_model.losses[0].decoder.label_embeddings.weight
    )


def test_save_pretrained_round_trip(tmp_path):
    model = espnet_mamba.build_model("mamba_small", d_model=32, num_layers=1).eval()
    checkpoint.save_pretrained(model, tmp_path / "m.pt")
    loaded = checkpoint.load_pretrained(tmp_path / "m.pt").eval()
    wav = torch.randn(1, 2000)
    torch.testing.assert_close(loaded.extract_features(wav)[0][-1], model.extract_features(wav)[0][-1])


def test_ssl_model_refuses_specaug(ssl_args):
    """encode() masks with HuBERT's mask util only: a SpecAugment in the config would be ignored."""
    ssl_args.specaug, ssl_args.specaug_conf = "specaug", {"apply_time_warp": False, "time_mask_width_range": 5}
    with pytest.raises(ValueError, match="specaug: null"):
        MambaSSLTask.build_model(ssl_args)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    exp = tmp_path / "other"
    exp.mkdir()
    torch.save({"encoder.encoders.0.weight": torch.zeros(1)}, exp / "valid.loss.best.pth")
    (exp / "config.yaml").write_text(yaml.safe_dump({"encoder": "conformer", "encoder_conf": {}}))
    with pytest.raises(ValueError, match="another model"):
        checkpoint.load_pretrained(exp / "valid.loss.best.pth")
    with pytest.raises(FileNotFoundError):
        checkpoint.load_pretrained(tmp_path / "missing.pth")


def test_checkpoint_whose_pretrained_file_is_gone_names_it(tmp_path):
    """Its config takes its shape from encoder_conf.pretrained: no silent fall back to a preset."""
    exp = tmp_path / "asr"
    exp.mkdir()
    torch.save({}, exp / "valid.loss.best.pth")
    config = {"encoder": "mamba_hubert", "encoder_conf": {"preset": "mamba_small", "pretrained": "gone/ssl.pth"}}
    (exp / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(FileNotFoundError, match="encoder_conf.pretrained gone/ssl.pth"):
        checkpoint.load_pretrained(exp / "valid.loss.best.pth")


def test_encoder_refuses_features_input():
    from espnet_mamba.espnet.encoder import MambaHuBERTEncoder

    with pytest.raises(ValueError, match="input_size: 1"):
        MambaHuBERTEncoder(input_size=80, preset="mamba_small")


def _tiny_encoder(**options):
    from conftest import tiny_overrides

    from espnet_mamba.espnet.encoder import MambaHuBERTEncoder

    return MambaHuBERTEncoder(preset="mamba_small", **options, **tiny_overrides("mamba_small"))


def test_encoder_freezes_the_backbone_for_its_first_updates():
    """freeze_encoder_steps counts optimizer updates: batches_per_update (ESPnet's accum_grad,
    set by ResumableTrainer) batches each; evaluation batches do not count."""
    encoder = _tiny_encoder(freeze_encoder_steps=2)
    encoder.batches_per_update = 2
    wavs, lengths = torch.randn(1, 4000), torch.tensor([4000])

    def trains() -> bool:
        return encoder(wavs, lengths)[0].requires_grad

    encoder.eval()
    assert trains()  # in eval mode nothing is frozen, and nothing counted
    encoder.train()
    assert [trains() for _ in range(6)] == [False] * 4 + [True] * 2
    assert encoder.trained_batches == 6


def test_resume_tells_the_encoder_the_batches_it_trained(tmp_path):
    """A resumed run goes on freezing where the killed one stopped, not from zero."""
    from espnet2.train.reporter import Reporter

    from espnet_mamba.espnet.trainer import ResumableTrainer

    model, reporter = torch.nn.Sequential(_tiny_encoder(freeze_encoder_steps=10)), Reporter()
    for epoch in (1, 2):
        reporter.set_epoch(epoch)
        with reporter.observe("train") as sub:
            for _ in range(3):
                sub.register({"loss": 1.0})
                sub.next()
    torch.save({"model": model.state_dict(), "reporter": reporter.state_dict(), "optimizers": [], "schedulers": [],
                "scaler": None}, tmp_path / "checkpoint.pth")  # fmt: skip
    resumed = torch.nn.Sequential(_tiny_encoder(freeze_encoder_steps=10))
    ResumableTrainer.resume(tmp_path / "checkpoint.pth", resumed, Reporter(), [], [], None)
    assert resumed[0].trained_batches == 6
