"""Write ESPnet's shape file (``utt_id num_samples``) for a wav.scp, checking every file.

    python -m espnet_mamba.bin.shapes --wav_scp data/train/wav.scp --out dump/shapes/train/speech_shape
"""

import argparse
from pathlib import Path


from espnet_mamba.audio import audio_info, read_scp
from espnet_mamba.nn.feature_extractor import MIN_SAMPLES


def main(cmd=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wav_scp", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(cmd)
    lines = []
    for utt_id, path in read_scp(args.wav_scp):
        info = audio_info(path, f"{utt_id} ({path})")
        if info.frames < MIN_SAMPLES:  # else training stops at the first batch that holds it
            raise ValueError(f"{utt_id} ({path}): {info.frames} samples, shorter than one frame of the model "
                             f"({MIN_SAMPLES} samples): remove it from the data dir")  # fmt: skip
        lines.append(f"{utt_id} {info.frames}\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(lines))


if __name__ == "__main__":
    main()
