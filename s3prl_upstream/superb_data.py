"""SUPERB data preparation that s3prl's clone does with scripts broken on torchaudio 2.11.

The ASR task reads per-split length tables (``len_for_bucket/<split>.csv``) that the clone's
``preprocess/generate_len_for_bucket.py`` writes with ``torchaudio.info`` (removed in
torchaudio 2.9). :func:`write_length_tables` writes the same tables with soundfile.

    python -m s3prl_upstream.superb_data LIBRISPEECH_ROOT OUTPUT_DIR train-clean-100 dev-clean test-clean
"""

import argparse
from pathlib import Path
from typing import List, Sequence

import pandas as pd
import soundfile


def write_length_tables(librispeech_root: Path, splits: Sequence[str], output_dir: Path) -> List[Path]:
    """For each split, ``output_dir/<split>.csv`` with columns file_path (relative to the root,
    e.g. ``dev-clean/84/121123/84-121123-0000.flac``), length (samples), label; longest first."""
    librispeech_root, output_dir = Path(librispeech_root), Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split in splits:
        split_dir = librispeech_root / split
        if not split_dir.is_dir():
            raise ValueError(f"no LibriSpeech split at {split_dir}")
        files = sorted(split_dir.rglob("*.flac")) + sorted(split_dir.rglob("*.wav"))
        if not files:
            raise ValueError(f"no .flac or .wav files under {split_dir}")
        table = pd.DataFrame(
            {
                "file_path": [str(f.relative_to(librispeech_root)) for f in files],
                "length": [soundfile.info(str(f)).frames for f in files],
                "label": None,
            }
        ).sort_values("length", ascending=False, kind="stable")
        path = output_dir / f"{split}.csv"
        table.reset_index(drop=True).to_csv(path)
        written.append(path)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("librispeech_root", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("splits", nargs="+")
    args = parser.parse_args(argv)
    for path in write_length_tables(args.librispeech_root, args.splits, args.output_dir):
        print(path)


if __name__ == "__main__":
    main()
