"""Stand-in PR corpus: LibriSpeech transcripts turned into phonemes with the lexicon files."""

from pathlib import Path

from .buckets import BucketDataset


class LibriPhoneDataset(BucketDataset):
    def __init__(self, split, tokenizer, bucket_size, path, lexicon, **kwargs):
        pronunciations = {}
        for lexicon_file in lexicon:
            for line in Path(lexicon_file).read_text().splitlines():
                word, *phones = line.split()
                pronunciations.setdefault(word, phones)
        items = []
        for subset in split:
            for transcript in sorted(Path(path, subset).rglob("*.trans.txt")):
                for line in transcript.read_text().splitlines():
                    utterance, *words = line.split()
                    phones = [phone for word in words for phone in pronunciations[word]]
                    items.append((str(transcript.parent / f"{utterance}.flac"), tokenizer.encode(" ".join(phones))))
        super().__init__(items, bucket_size)
