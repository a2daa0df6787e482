"""Join consecutive utterances into long-form documents of at most N minutes (paper 1's
long-context ASR), or cut segmented recordings into one wav per utterance (--max_minutes 0).

    python -m espnet_mamba.bin.make_documents --data_dir data/train --out_dir data/train_doc5 --max_minutes 5

See :mod:`espnet_mamba.documents` for the grouping and the files written.
"""

import argparse
import sys

from espnet_mamba.documents import plan_documents, read_data_dir, write_documents


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaldi data dir: wav.scp, text, segments or utt2spk")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--max_minutes", type=float, required=True, help="document length limit; 0: one per utterance")
    parser.add_argument("--audio_dir", help="where the wavs go (default: OUT_DIR/wav)")
    args = parser.parse_args(cmd)
    try:
        utterances = read_data_dir(args.data_dir)
        documents = plan_documents(utterances, 60 * args.max_minutes)
        write_documents(documents, args.out_dir, single=args.max_minutes <= 0, audio_dir=args.audio_dir)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"make_documents: {error}")
    print(f"{len(utterances)} utterances -> {len(documents)} documents in {args.out_dir}")


if __name__ == "__main__":
    main()
