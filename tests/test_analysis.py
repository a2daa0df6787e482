"""The layer-wise analyses (alignments, purity, PWCCA, MINE) on data whose answers are known,
and the analyze CLI end to end on a tiny corpus with a tiny random model."""

import math

import numpy as np
import pytest
import soundfile

import espnet_mamba
from espnet_mamba.analysis import alignments, cca, data, features, mine, purity, report
from espnet_mamba.analysis.corpus import FrameSet, alignment_labeler
from espnet_mamba.bin import analyze

TINY = dict(d_model=64, num_layers=2, ssm_impl="torch")
TINY_ARGS = ["--preset", "mamba_small", "--override", "d_model=64", "--override", "num_layers=2",
             "--override", "ssm_impl=torch", "--device", "cpu"]  # fmt: skip


# Alignments ------------------------------------------------------------------------------------


def test_ctm_segments_and_frame_labels(tmp_path):
    ctm = tmp_path / "phones.ctm"
    ctm.write_text("u1 1 0.10 0.05 B\nu1 1 0.00 0.10 A 0.9\n;; comment\n\nu2 A 0.0 0.02 sil\n")
    alignment = alignments.read_ctm(ctm)
    assert [s.label for s in alignment["u1"]] == ["A", "B"]  # sorted by start
    assert alignment["u1"][1] == alignments.Segment(0.10, pytest.approx(0.15), "B")
    # frame i sees [0.02 i, 0.02 i + 0.025): centres 0.0125, 0.0325, ..., 0.1725; A covers [0, 0.1),
    # B [0.1, 0.15) (the centres 0.1125 and 0.1325), then a gap
    labels = alignments.frame_labels(alignment["u1"], 9, gap_label="sil")
    assert labels == ["A"] * 5 + ["B"] * 2 + ["sil"] * 2
    assert alignments.frame_labels(alignment["u1"], 9)[-1] is None
    # Kaldi's MFCC frames at 100 Hz (25 ms windows): centres 0.0125, 0.0225, ...
    assert alignments.frame_labels(alignment["u1"], 16, frame_rate=100.0)[8:16] == ["A", "B", "B", "B", "B", "B",
                                                                                   None, None]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("u1 1 0.0 A\n", "expected 'utt channel"),
        ("u1 1 x 0.1 A\n", "must be numbers"),
        ("u1 1 0.5 -0.1 A\n", "negative"),
    ],
)
def test_ctm_errors_name_file_and_line(tmp_path, line, problem):
    ctm = tmp_path / "bad.ctm"
    ctm.write_text("u0 1 0.0 0.1 A\n" + line)
    with pytest.raises(ValueError, match=f"bad.ctm:2: .*{problem}"):
        alignments.read_ctm(ctm)


def write_textgrid(path, words, phones, xmax):
    """A long-format TextGrid like MFA's: tiers 'words' and 'phones' of (start, end, text)."""

    def tier(index, name, intervals):
        lines = [f"    item [{index}]:", '        class = "IntervalTier" ', f'        name = "{name}" ',
                 "        xmin = 0 ", f"        xmax = {xmax} ",
                 f"        intervals: size = {len(intervals)} "]  # fmt: skip
        for i, (start, end, text) in enumerate(intervals, 1):
            lines += [f"        intervals [{i}]:", f"            xmin = {start} ", f"            xmax = {end} ",
                      f'            text = "{text}" ']  # fmt: skip
        return lines

    header = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {xmax} ",
              "tiers? <exists> ", "size = 2 ", "item []: "]  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + tier(1, "words", words) + tier(2, "phones", phones)) + "\n")


def test_textgrid_tiers_and_directory(tmp_path):
    words = [(0, 0.1, ""), (0.1, 0.3, "hi"), (0.3, 0.4, "")]
    phones = [(0, 0.1, ""), (0.1, 0.2, "HH"), (0.2, 0.3, "AY1"), (0.3, 0.4, "")]
    write_textgrid(tmp_path / "spk1" / "utt1.TextGrid", words, phones, 0.4)
    write_textgrid(tmp_path / "spk2" / "utt2.TextGrid", [(0, 0.4, 'say ""x""')], [(0, 0.4, "S")], 0.4)
    tiers = alignments.read_textgrid(tmp_path / "spk1" / "utt1.TextGrid")
    assert tiers["words"] == [alignments.Segment(0.1, 0.3, "hi")]  # empty intervals are gaps
    assert [s.label for s in tiers["phones"]] == ["HH", "AY1"]
    phone_alignment = alignments.read_alignments(tmp_path, "phones")
    assert sorted(phone_alignment) == ["utt1", "utt2"]
    assert alignments.frame_labels(phone_alignment["utt1"], 20) == [None] * 5 + ["HH"] * 5 + ["AY1"] * 5 + [None] * 5
    assert alignments.read_alignments(tmp_path, "words")["utt2"][0].label == 'say "x"'
    with pytest.raises(ValueError, match="no interval tier named 'syllables'"):
        alignments.read_alignments(tmp_path, "syllables")


def test_textgrid_errors(tmp_path):
    short = tmp_path / "short.TextGrid"
    short.write_text('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<exists>\n1\n"IntervalTier"\n')
    with pytest.raises(ValueError, match="short.TextGrid: no tiers found"):
        alignments.read_textgrid(short)
    bad = tmp_path / "bad.TextGrid"
    write_textgrid(bad, [(0, 0.1, "a")], [(0, 0.1, "b")], 0.1)
    bad.write_text(bad.read_text().replace("xmax = 0.1 \n            text", "xmax = abc \n            text", 1))
    with pytest.raises(ValueError, match=r"bad.TextGrid:\d+: expected a number, got 'abc'"):
        alignments.read_textgrid(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .TextGrid files"):
        alignments.read_alignments(tmp_path / "empty", "phones")
    with pytest.raises(ValueError, match="do not exist"):
        alignments.read_alignments(tmp_path / "missing.ctm", "phones")


def test_normalize_phone():
    assert [alignments.normalize_phone(p) for p in ["AH0_B", "IY1", "SIL", "sil", "T_E", "ER2"]] == [
        "AH", "IY", "SIL", "sil", "T", "ER",
    ]  # fmt: skip


def test_alignment_labeler_normalizes_and_fills_gaps():
    labeler = alignment_labeler({"u": [alignments.Segment(0.0, 0.04, "AA1_B")]}, "sil", alignments.normalize_phone)
    assert labeler("u", 3) == ["AA", "AA", "sil"]


# Purity ------------------------------------------------------------------------------------------


def test_purity_of_a_perfect_mapping_is_one():
    phones = np.random.default_rng(0).integers(0, 8, 1000)
    result = purity.purity(phones, (phones * 3 + 1) % 8)  # a relabelling of the phones
    assert result == purity.PurityResult(1.0, 1.0, pytest.approx(1.0))


def test_pnmi_of_independent_units_is_near_zero():
    rng = np.random.default_rng(0)
    result = purity.purity(rng.integers(0, 10, 200000), rng.integers(0, 20, 200000))
    assert result.pnmi < 0.005
    assert result.phone_purity == pytest.approx(0.1, abs=0.01)  # max over uniform phones
    assert result.cluster_purity == pytest.approx(0.05, abs=0.01)


def test_purity_hand_computed_example():
    phones = np.array([0, 0, 0, 1, 1, 2])
    units = np.array([0, 0, 1, 1, 1, 1])
    # joint counts: (0,0)=2, (0,1)=1, (1,1)=2, (2,1)=1 of 6 frames
    mutual_information = (
        2 / 6 * math.log(2) + 1 / 6 * math.log(1 / 2) + 2 / 6 * math.log(3 / 2) + 1 / 6 * math.log(3 / 2)
    )
    h_phone = -(1 / 2 * math.log(1 / 2) + 1 / 3 * math.log(1 / 3) + 1 / 6 * math.log(1 / 6))
    result = purity.purity(phones, units)
    assert result.phone_purity == pytest.approx((2 + 2) / 6)  # unit 0 -> phone 0, unit 1 -> phone 1
    assert result.cluster_purity == pytest.approx((2 + 2 + 1) / 6)
    assert result.pnmi == pytest.approx(mutual_information / h_phone)


@pytest.mark.parametrize(
    "phones, units, problem",
    [
        ([0, 1], [0], "one id per frame"),
        ([0, -1], [0, 1], "non-negative"),
        ([0.5, 1], [0, 1], "integer"),
        ([], [], "no frames"),
    ],  # fmt: skip
)
def test_purity_rejects_bad_ids(phones, units, problem):
    with pytest.raises(ValueError, match=problem):
        purity.purity(np.array(phones, dtype=float if problem == "integer" else int), np.array(units, dtype=int))


def test_layerwise_purity_finds_phone_clusters():
    rng = np.random.default_rng(0)
    phones = rng.integers(0, 5, 2000)
    centres = rng.normal(size=(5, 8)) * 10
    separable = centres[phones] + rng.normal(size=(2000, 8))
    noise = rng.normal(size=(2000, 8))
    mask = np.arange(2000) % 10 != 0
    results = purity.layerwise_purity([separable, noise], phones, n_clusters=5, mask=mask)
    assert results[0].pnmi > 0.95 and results[0].phone_purity > 0.95
    assert results[1].pnmi < 0.05


# CCA -------------------------------------------------------------------------------------------------


def test_cca_of_a_linear_transform_of_labels_is_one():
    rng = np.random.default_rng(0)
    labels = cca.one_hot(rng.integers(0, 10, 3000))
    layer = labels @ rng.normal(size=(10, 32)) + 1e-3 * rng.normal(size=(3000, 32))
    result = cca.cca(layer, labels)
    assert len(result.correlations) == 9  # centred one-hot labels span 9 dimensions
    assert result.correlations.min() > 0.999
    assert result.weights.sum() == pytest.approx(1.0)
    assert result.pwcca > 0.999


def test_cca_of_independent_noise_is_low():
    rng = np.random.default_rng(0)
    labels = cca.one_hot(rng.integers(0, 10, 5000))
    assert cca.cca(rng.normal(size=(5000, 16)), labels).pwcca < 0.1


def test_cca_of_one_dimension_is_pearson_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    b = a + rng.normal(size=1000)
    assert cca.cca(a[:, None], b[:, None]).pwcca == pytest.approx(np.corrcoef(a, b)[0, 1], rel=1e-4)


def test_pwcca_weights_follow_how_much_of_the_layer_a_direction_is():
    """Four label-driven dimensions beside twelve noise dimensions: four correlations near 1,
    five near 0. PWCCA leans to the former when they dominate the layer, to the latter when
    the noise does; the plain mean of the correlations does not move."""
    rng = np.random.default_rng(0)
    labels = cca.one_hot(rng.integers(0, 10, 4000))
    signal, noise = labels @ rng.normal(size=(10, 4)), rng.normal(size=(4000, 12))
    loud_noise = cca.cca(np.concatenate([signal, 10 * noise], axis=1), labels)
    quiet_noise = cca.cca(np.concatenate([signal, 0.1 * noise], axis=1), labels)
    assert np.allclose(loud_noise.correlations, quiet_noise.correlations, atol=1e-3)
    mean = loud_noise.correlations.mean()
    assert loud_noise.pwcca < mean - 0.2 and quiet_noise.pwcca > mean + 0.2


def test_layerwise_pwcca_masks_subsamples_and_checks():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 600)
    ids[:100] = -1  # unlabelled
    layer = np.eye(4)[np.maximum(ids, 0)] @ rng.normal(size=(4, 6))
    scores = cca.layerwise_pwcca([layer, rng.normal(size=(600, 6))], ids, ids >= 0, max_frames=300)
    assert scores[0] > 0.99 and scores[1] < 0.4
    with pytest.raises(ValueError, match="constant"):
        cca.cca(np.ones((10, 3)), cca.one_hot(np.arange(10) % 2))
    with pytest.raises(ValueError, match="same N"):
        cca.cca(np.ones((10, 3)), np.ones((9, 2)))


# MINE ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [2, 5])
def test_mine_matches_closed_form_for_correlated_gaussians(dim):
    config = mine.MineConfig(steps=300)
    estimate, exact = mine.gaussian_check(dim, 0.8, 2000, config)
    assert exact == pytest.approx(-dim / 2 * math.log(1 - 0.64))
    assert estimate == pytest.approx(exact, rel=0.2)


def test_mine_of_independent_variables_is_near_zero():
    x, _ = mine.correlated_gaussians(2000, 3, 0.0, seed=1)
    _, t = mine.correlated_gaussians(2000, 3, 0.0, seed=2)
    assert abs(mine.mine_estimate(x, t, mine.MineConfig(steps=200))) < 0.1


def test_mine_rejects_bad_input():
    with pytest.raises(ValueError, match="same N"):
        mine.mine_estimate(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mine.mine_estimate(np.full((5, 2), np.nan), np.ones((5, 2)))
    with pytest.raises(ValueError, match="rho"):
        mine.gaussian_mutual_information(2, 1.0)


# Features, data files, tables -------------------------------------------------------------------------


def test_input_features_line_up_with_model_frames():
    model = espnet_mamba.build_model("mamba_small", **TINY).eval()
    for samples in (400, 720, 16399):
        wav = np.random.default_rng(samples).normal(size=samples).astype(np.float32) * 0.1
        frames = len(features.hidden_states(model, wav)[0])
        assert features.mfcc_features(wav).shape == (frames, 39)
        assert features.input_features("cnn", model, wav).shape == (frames, 512)
    with pytest.raises(ValueError, match="input features"):
        features.input_features("fbank", model, wav)


def test_data_files(tmp_path):
    scp = tmp_path / "wav.scp"
    scp.write_text("a /x/a.wav\nb sox b.flac -t wav - |\n")
    with pytest.raises(ValueError, match="'b' is a piped command"):
        data.read_wav_scp(scp)
    scp.write_text("a x.wav\na y.wav\n")
    with pytest.raises(ValueError, match="wav.scp:2: utterance 'a' appears twice"):
        data.read_wav_scp(scp)
    soundfile.write(tmp_path / "8k.wav", np.zeros(800), 8000)
    soundfile.write(tmp_path / "stereo.wav", np.zeros((1600, 2)), 16000)
    with pytest.raises(ValueError, match="8k.wav: sampled at 8000 Hz"):
        data.load_audio(tmp_path / "8k.wav")
    with pytest.raises(ValueError, match="stereo.wav: has 2 channels"):
        data.load_audio(tmp_path / "stereo.wav")
    assert data.select_utterances({"a": "", "b": "", "c": ""}, [{"c": 1, "a": 1}], max_utts=1) == ["a"]
    with pytest.raises(ValueError, match="utterance ids match"):
        data.select_utterances({"a": ""}, [{"b": 1}])


def test_frame_set_keeps_most_frequent_classes():
    frames = FrameSet([np.zeros((6, 1))], {"word": np.array([0, 0, 0, 1, 1, -1])}, {"word": ["x", "y"]})
    assert frames.labelled("word").tolist() == [True] * 5 + [False]
    assert frames.labelled("word", max_classes=1).tolist() == [True] * 3 + [False] * 3


def test_layer_table_round_trip(tmp_path):
    report.write_layer_table(tmp_path / "t.tsv", {"a": [0.5, 0.25], "b": [1, 2]})
    assert report.read_layer_table(tmp_path / "t.tsv") == {"a": [0.5, 0.25], "b": [1.0, 2.0]}
    with pytest.raises(ValueError, match="one value per layer"):
        report.write_layer_table(tmp_path / "u.tsv", {"a": [1], "b": [1, 2]})
    panels = report.compare_tables({"m1": {"a": [1, 2]}, "m2": {"a": [3, 4]}}, ["a"])
    assert panels == {"a": {"m1": [1, 2], "m2": [3, 4]}}
    with pytest.raises(ValueError, match="no column 'b'"):
        report.compare_tables({"m1": {"a": [1]}}, ["b"])


# CLI end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four 0.8 s utterances (sine + noise) of two speakers, with phone and word CTMs and a
    TextGrid folder of the phones."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    scp, phone_ctm, word_ctm, utt2spk = [], [], [], []
    for i in range(4):
        t = np.arange(12800) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (150 + 100 * i) * t) + 0.05 * rng.normal(size=t.size)
        soundfile.write(root / f"u{i}.wav", wav.astype(np.float32), 16000)
        scp.append(f"u{i} {root / f'u{i}.wav'}")
        utt2spk.append(f"u{i} spk{i % 2}")
        phones = [(j * 0.1, 0.1, ["AA1", "B", "K", "D"][(i + j) % 4]) for j in range(8)]
        phone_ctm += [f"u{i} 1 {s:.2f} {d:.2f} {p}" for s, d, p in phones]
        word_ctm += [f"u{i} 1 {j * 0.2:.2f} 0.20 w{(i + j) % 3}" for j in range(4)]
        write_textgrid(root / "tg" / f"u{i}.TextGrid", [(0, 0.8, "w")], [(s, s + d, p) for s, d, p in phones], 0.8)
    for name, lines in [("wav.scp", scp), ("phones.ctm", phone_ctm), ("words.ctm", word_ctm), ("utt2spk", utt2spk)]:
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def test_cli_purity_with_textgrids(corpus, tmp_path):
    analyze.main(["purity", "--wav_scp", str(corpus / "wav.scp"), "--phone_alignments", str(corpus / "tg"),
                  "--normalize_phones", "--n_clusters", "4", "--output_dir", str(tmp_path), *TINY_ARGS])  # fmt: skip
    table = report.read_layer_table(tmp_path / "purity.tsv")
    assert list(table) == ["phone_purity", "cluster_purity", "pnmi"]
    assert all(len(values) == 3 for values in table.values())  # layers 0..2
    assert all(0 <= v <= 1 for values in table.values() for v in values)
    assert (tmp_path / "purity.png").stat().st_size > 1000


def test_cli_cca_from_a_saved_checkpoint(corpus, tmp_path):
    from espnet_mamba.espnet.checkpoint import save_pretrained

    save_pretrained(espnet_mamba.build_model("mamba_small", **TINY), tmp_path / "tiny.pt")
    analyze.main(["cca", "--wav_scp", str(corpus / "wav.scp"), "--phone_alignments", str(corpus / "phones.ctm"),
                  "--word_alignments", str(corpus / "words.ctm"), "--utt2spk", str(corpus / "utt2spk"),
                  "--checkpoint", str(tmp_path / "tiny.pt"), "--device", "cpu",
                  "--output_dir", str(tmp_path / "out")])  # fmt: skip
    table = report.read_layer_table(tmp_path / "out" / "cca.tsv")
    assert list(table) == ["phone", "word", "speaker"]
    assert all(len(values) == 3 and all(0 <= v <= 1 for v in values) for values in table.values())
    assert (tmp_path / "out" / "cca.png").exists()


def test_cli_mine_and_compare(corpus, tmp_path):
    common = ["--wav_scp", str(corpus / "wav.scp"), "--max_utts", "2", "--steps", "20", *TINY_ARGS]
    analyze.main(["mine", *common, "--output_dir", str(tmp_path / "a")])
    analyze.main(["mine", *common, "--input_features", "cnn", "--output_dir", str(tmp_path / "b")])
    table = report.read_layer_table(tmp_path / "a" / "mine.tsv")
    assert list(table) == ["mi_nats", "mi_std"] and len(table["mi_nats"]) == 3
    assert (tmp_path / "a" / "mine.png").exists()
    analyze.main(["compare", "--table", f"mfcc={tmp_path / 'a' / 'mine.tsv'}", "--table",
                  f"cnn={tmp_path / 'b' / 'mine.tsv'}", "--measures", "mi_nats", "--log_y",
                  "--output", str(tmp_path / "compare.png")])  # fmt: skip
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_cli_mine_selftest_prints_a_table(monkeypatch, capsys):
    monkeypatch.setattr(analyze, "SELFTEST_SAMPLES", 500)
    monkeypatch.setattr(analyze, "SELFTEST_STEPS", 30)
    analyze.main(["mine", "--selftest", "--device", "cpu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["rho", "estimate", "exact", "error"]
    rows = [line.split() for line in lines[2:]]
    assert [float(r[0]) for r in rows] == list(analyze.SELFTEST_RHOS)
    assert [float(r[2]) for r in rows] == [
        round(mine.gaussian_mutual_information(5, rho), 3) for rho in analyze.SELFTEST_RHOS
    ]


def test_cli_errors(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit):  # both model sources
        analyze.main(["purity", "--wav_scp", "x", "--phone_alignments", "y", "--output_dir", "z",
                      "--checkpoint", "c", *TINY_ARGS])  # fmt: skip
    (tmp_path / "wav.scp").write_text(f"u0 {tmp_path / '8k.wav'}\n")
    soundfile.write(tmp_path / "8k.wav", np.zeros(8000), 8000)
    with pytest.raises(SystemExit, match="8k.wav: sampled at 8000 Hz"):
        analyze.main(["mine", "--wav_scp", str(tmp_path / "wav.scp"), "--output_dir", str(tmp_path), *TINY_ARGS])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        analyze.main(["mine", "--wav_scp", str(corpus / "wav.scp"), "--output_dir", str(tmp_path),
                      *TINY_ARGS, "--override", "d_model"])  # fmt: skip
    assert "--override wants KEY=VALUE, got 'd_model'" in capsys.readouterr().err
