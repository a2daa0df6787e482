"""TED-LIUM release 3 (legacy split: ``legacy/<split>/{sph,stm}``) -> a segmented Kaldi data dir:
wav.scp (talk -> sph path), segments, text, utt2spk (utterance -> talk).

STM lines ``talk channel speaker start end <label> words``; segments marked
``ignore_time_segment_in_scoring`` are dropped and ``<unk>`` markers removed from the words.
"""

import argparse
from pathlib import Path


def parse_stm(stm: Path):
    """(utt_id, talk, start, end, words) for each scored segment of one talk's STM."""
    for number, line in enumerate(stm.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split()
        if len(fields) < 6:
            raise ValueError(f"{stm}:{number}: expected 'talk channel speaker start end label words'")
        talk, start, end = fields[0], float(fields[3]), float(fields[4])
        words = [w for w in fields[6:] if w != "<unk>"]
        if fields[2] == "inter_segment_gap" or words == ["ignore_time_segment_in_scoring"] or not words:
            continue
        utt_id = f"{talk}-{int(round(start * 100)):07d}-{int(round(end * 100)):07d}"
        yield utt_id, talk, start, end, " ".join(words)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split_dir", required=True, type=Path, help="e.g. TEDLIUM_release-3/legacy/train")
    parser.add_argument("--data_dir", required=True, type=Path)
    args = parser.parse_args()
    wav_scp, rows = {}, []
    for stm in sorted((args.split_dir / "stm").glob("*.stm")):
        sph = args.split_dir / "sph" / f"{stm.stem}.sph"
        if not sph.exists():
            raise FileNotFoundError(f"{sph} (audio of {stm}) is missing")
        wav_scp[stm.stem] = sph.resolve()
        rows.extend(parse_stm(stm))
    if not rows:
        raise FileNotFoundError(f"no segments in {args.split_dir}/stm/*.stm")
    rows.sort()
    out = args.data_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "wav.scp").write_text("".join(f"{t} {wav_scp[t]}\n" for t in sorted(wav_scp)))
    (out / "segments").write_text("".join(f"{u} {t} {s:.2f} {e:.2f}\n" for u, t, s, e, _ in rows))
    (out / "text").write_text("".join(f"{u} {w}\n" for u, _, _, _, w in rows), encoding="utf-8")
    (out / "utt2spk").write_text("".join(f"{u} {t}\n" for u, t, _, _, _ in rows))


if __name__ == "__main__":
    main()
