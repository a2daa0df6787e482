"""The pretraining-throughput tool: its synthetic corpus, its config (accepted by the task's
parser) and its reading of ESPnet's log."""

import pytest
import yaml

from espnet_mamba.bin import ssl_throughput
from espnet_mamba.espnet.tasks import MambaSSLTask
from espnet_mamba.kmeans import check_labels

LOG = """
[vm] 1epoch:train:1-10batch: iter_time=0.006, forward_time=0.164, loss=8.543, backward_time=0.088, train_time=2.5
[vm] 1epoch:train:11-20batch: iter_time=0.001forward_time=0.080, hubert_loss_m_11=9.9, loss=5.012, backward_time=0.030, train_time=0.125
[vm] 1epoch:train:91-100batch: iter_time=0.001, forward_time=0.080, loss=4.635, backward_time=0.030, train_time=1.25e-01
[vm] 1epoch results: [train] iter_time=0.003, loss=5.1, train_time=0.17, time=17.5 seconds, total_count=100
"""


def test_corpus_and_config_are_valid(tmp_path):
    ssl_throughput.write_corpus(tmp_path / "corpus", utterances=3, seconds=1.0)
    assert check_labels(tmp_path / "corpus/wav.scp", tmp_path / "corpus/text", ssl_throughput.N_CLUSTERS) == 3
    ssl_throughput.write_config(tmp_path / "c.yaml", "mamba_small", batch_size=2, steps=10, amp=False,
                                overrides={"compile_cnn": True})
    args = MambaSSLTask.get_parser().parse_args(
        ["--config", str(tmp_path / "c.yaml"), "--token_list", str(tmp_path / "corpus/tokens.txt"),
         "--output_dir", str(tmp_path / "exp")]
    )  # fmt: skip
    assert args.encoder == "mamba_hubert" and args.num_iters_per_epoch == 10
    assert args.encoder_conf == {"preset": "mamba_small", "compile_cnn": True}
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["loss"][0]["conf"]["num_classes"] == 101


def test_summary_reads_espnet_log():
    stats = ssl_throughput.summarize(LOG, steps=100, batch_size=8, seconds=15)
    assert stats["wall_s"] == 17.5
    assert stats["audio_per_s"] == 100 * 8 * 15 / 17.5
    assert stats["losses"] == [8.543, 5.012, 4.635]
    # the first interval (warm-up, compilation) left out
    assert stats["steady_step_ms"] == 125 and stats["steady_audio_per_s"] == 8 * 15 / 0.125
    assert stats["steady_data_wait_ms"] == 1.0


@pytest.mark.parametrize("timespan, seconds", [("1 minute and 3.5 seconds", 63.5), ("2 minutes", 120),
                                               ("1 hour, 2 minutes and 5 seconds", 3725)])  # fmt: skip
def test_summary_reads_the_epoch_time_as_humanfriendly_writes_it(timespan, seconds):
    """Singular units, and several parts; the train part's time, not the valid part's."""
    log = LOG.replace("time=17.5 seconds, total_count=100",
                      f"time={timespan}, total_count=100, [valid] loss=4.0, time=2.5 seconds")
    assert ssl_throughput.summarize(log, steps=100, batch_size=8, seconds=15)["wall_s"] == seconds


def test_refuses_a_work_dir_with_a_comma(tmp_path, capsys):
    with pytest.raises(SystemExit):
        ssl_throughput.main(["--work_dir", str(tmp_path / "a,b")])
    assert "comma" in capsys.readouterr().err
    assert not (tmp_path / "a,b").exists()


def test_failed_training_reports_the_end_of_its_log(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("no_such_option: 1\n")
    with pytest.raises(RuntimeError, match=r"(?s)exited with status [1-9].*train\.log.*no_such_option"):
        ssl_throughput.run_training(tmp_path, tmp_path / "corpus", config, ngpu=0)
