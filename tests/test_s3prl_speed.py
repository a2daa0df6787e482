"""The upstream speed comparison runs end to end on CPU (tiny audio)."""

from s3prl_upstream import speed


def test_speed_table_compares_both_upstreams(capsys):
    speed.main(["--preset", "mamba_small", "--seconds", "0.5", "--repeat", "1", "--device", "cpu"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.5 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    hubert_ms, mamba_ms, ratio = map(float, cells[2:5])
    assert hubert_ms > 0 and mamba_ms > 0 and abs(ratio - hubert_ms / mamba_ms) < 0.01 + 0.01 * ratio
