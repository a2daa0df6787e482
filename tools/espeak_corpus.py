"""A synthetic spoken-command corpus from espeak-ng, in Kaldi style, for CPU experiments that
need a model trained to a real WER (the mini_an4 smoke recipe gives only ~100%).

Each utterance is 2 to 6 words of an AN4-like vocabulary (digits, "oh", commands), spoken by
one of espeak-ng's English voice variants at a random speed and pitch, resampled to 16 kHz
mono 16-bit. Each set is drawn from its own random stream (the voices are shared, so this
measures the model, not generalisation to new speakers). Writes OUT_DIR/data/{train,dev,test}/
{wav.scp,text,utt2spk,spk2utt} and the wavs under OUT_DIR/wav.

    python tools/espeak_corpus.py --out_dir exp/espeak --train 1500 --dev 100 --test 200

Needs the espeak-ng program (Debian/Ubuntu: apt-get install espeak-ng).
"""

import argparse
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import soundfile
import torch
import torchaudio

from espnet_mamba.audio import write_data_dir
from espnet_mamba.validation import SAMPLE_RATE

WORDS = ("ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE OH "
         "ENTER ERASE RUBOUT REPEAT STOP GO YES NO START HELP").split()  # fmt: skip
VOICES = ("en-us", "en-us+m3", "en-us+m7", "en-us+f2", "en-us+f4", "en+m1", "en+f3")


def speak(text: str, voice: str, speed: int, pitch: int) -> torch.Tensor:
    """espeak-ng's audio of ``text`` at 16 kHz, (samples,) float."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", tmp.name, text.lower()],
                       check=True, capture_output=True)  # fmt: skip
        wav, rate = soundfile.read(tmp.name, dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(wav), rate, SAMPLE_RATE)


def write_set(data_dir: Path, wav_dir: Path, name: str, count: int, rng: random.Random) -> None:
    """``count`` utterances into data_dir/name (Kaldi files) and wav_dir/name (wavs)."""
    (wav_dir / name).mkdir(parents=True, exist_ok=True)
    wav_scp, utt2spk, texts = {}, {}, {}
    for i in range(count):
        voice = rng.choice(VOICES)
        speaker = voice.replace("+", "_")
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        utt = f"{speaker}-{name}{i:05d}"
        path = (wav_dir / name / f"{utt}.wav").resolve()
        wav = speak(text, voice, speed=rng.randint(130, 200), pitch=rng.randint(25, 75))
        soundfile.write(path, wav.numpy(), SAMPLE_RATE, subtype="PCM_16")
        wav_scp[utt], utt2spk[utt], texts[utt] = str(path), speaker, text
    write_data_dir(data_dir / name, wav_scp=wav_scp, utt2spk=utt2spk, text=texts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", type=Path, required=True, help="writes OUT_DIR/data and OUT_DIR/wav")
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--dev", type=int, default=100)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    for offset, (name, count) in enumerate((("train", args.train), ("dev", args.dev), ("test", args.test))):
        write_set(args.out_dir / "data", args.out_dir / "wav", name, count, random.Random(args.seed * 3 + offset))
    print(f"wrote {args.out_dir / 'data'}/{{train,dev,test}}")


if __name__ == "__main__":
    main()
