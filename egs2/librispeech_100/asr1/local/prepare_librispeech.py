"""LibriSpeech parts (``<part>/<speaker>/<chapter>/*.flac`` + ``*.trans.txt``) -> one Kaldi data
dir: wav.scp (flac paths; ESPnet and soundfile read FLAC), text, utt2spk (speaker-chapter, so
documents follow chapters), spk2utt. Several --corpus_dir are merged (e.g. dev-clean + dev-other).
"""

import argparse
from pathlib import Path

from espnet_mamba.audio import write_data_dir


def read_part(part: Path) -> dict:
    """{utt_id: (flac path, transcript, speaker-chapter)} of one LibriSpeech part."""
    rows = {}
    for trans in sorted(part.glob("*/*/*.trans.txt")):
        for line in trans.read_text().splitlines():
            utt_id, _, words = line.partition(" ")
            flac = trans.parent / f"{utt_id}.flac"
            if not flac.exists():
                raise FileNotFoundError(f"{flac} listed in {trans} is missing")
            rows[utt_id] = (flac.resolve(), words.strip(), "-".join(utt_id.split("-")[:2]))
    if not rows:
        raise FileNotFoundError(f"no */*/*.trans.txt under {part}")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus_dir", action="append", required=True, type=Path)
    parser.add_argument("--data_dir", required=True, type=Path)
    args = parser.parse_args()
    rows = {}
    for part in args.corpus_dir:
        rows.update(read_part(part))
    write_data_dir(args.data_dir, wav_scp={u: row[0] for u, row in rows.items()},
                   utt2spk={u: row[2] for u, row in rows.items()}, text={u: row[1] for u, row in rows.items()})


if __name__ == "__main__":
    main()
