"""Unpack mini_an4 (NIST SPHERE, 16 kHz) to wav files and write Kaldi-style data dirs.

data/train: the 5 training utterances; data/test: the 2 test utterances; data/dev: the test
utterances again (mini_an4 has no dev set; this is a smoke-test corpus).
"""

import argparse
import re
import tarfile
from pathlib import Path

import soundfile

from espnet_mamba.audio import write_data_dir


def transcripts(path: Path) -> dict:
    """'<s> WORDS </s> (utt)' or 'WORDS (utt)' lines -> {utt: WORDS}."""
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\((\S+)\)$", line.strip())
        if not match:
            raise ValueError(f"{path}: cannot parse {line!r}")
        out[match.group(2)] = match.group(1)
    return out


def write_split(root: Path, name: str, wav_dir: Path, data_dir: Path) -> None:
    ids = (root / "etc" / f"{name}.fileids").read_text().split()
    texts = transcripts(root / "etc" / f"{name}.transcription")
    wav_scp, utt2spk, text = {}, {}, {}
    for file_id in ids:
        utt = Path(file_id).name
        speaker = Path(file_id).parent.name
        audio, rate = soundfile.read(root / "wav" / f"{file_id}.sph", dtype="int16")
        wav = wav_dir / f"{speaker}-{utt}.wav"
        soundfile.write(wav, audio, rate, subtype="PCM_16")
        key = f"{speaker}-{utt}"
        wav_scp[key], utt2spk[key], text[key] = str(wav.resolve()), speaker, texts[utt]
    for split in ([name.replace("an4_", "")] if name == "an4_train" else ["test", "dev"]):
        write_data_dir(data_dir / split, wav_scp=wav_scp, utt2spk=utt2spk, text=text)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--download_dir", default="downloads")
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()
    download = Path(args.download_dir)
    with tarfile.open(args.archive) as tar:
        tar.extractall(download, filter="data")
    root = download / "downloads" / "an4"
    wav_dir = download / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    for name in ("an4_train", "an4_test"):
        write_split(root, name, wav_dir, Path(args.data_dir))


if __name__ == "__main__":
    main()
