"""Score hypothesis files against a reference (WER/CER with jiwer) into a Markdown table.

    python -m espnet_mamba.bin.asr_score --ref data/test/text \
        --hyp offline=exp/asr/decode_offline/test/text --hyp streaming=exp/asr/decode_stream/test/text \
        --title "mini_an4 test" --out exp/asr/RESULTS.md
"""

import argparse
import sys
from pathlib import Path

from espnet_mamba.asr_scoring import error_rates, read_transcripts, results_table


def _named(text: str):
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--hyp wants NAME=PATH, got {text!r}")
    return name, path


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", required=True, help="reference Kaldi text or trn")
    parser.add_argument("--hyp", required=True, action="append", type=_named, help="NAME=PATH, repeatable")
    parser.add_argument("--title", default="Results")
    parser.add_argument("--out", required=True, type=Path, help="Markdown file to append the table to")
    args = parser.parse_args(cmd)
    try:
        ref = read_transcripts(args.ref)
        rows = [(name, error_rates(ref, read_transcripts(path))) for name, path in args.hyp]
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"asr_score: {error}")
    section = f"## {args.title}\n\nReference: `{args.ref}`\n\n{results_table(rows)}"
    print(section)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(section + "\n")


if __name__ == "__main__":
    main()
