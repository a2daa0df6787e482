"""Stand-in SF corpus: ``<path>/<split>/<utterance>.wav`` and ``<path>/<split>.tsv`` lines of
``utterance<TAB>BOS words EOS<TAB>O slot-tags O`` (the sentence and IOB tags the
character-slot text encoder reads)."""

from pathlib import Path

from .buckets import BucketDataset


class SnipsDataset(BucketDataset):
    def __init__(self, split, tokenizer, bucket_size, path, **kwargs):
        items = []
        for subset in split:
            for line in Path(path, f"{subset}.tsv").read_text().splitlines():
                utterance, sentence, tags = line.split("\t")
                items.append((str(Path(path, subset, f"{utterance}.wav")), tokenizer.encode(f"{sentence}\t{tags}")))
        super().__init__(items, bucket_size)
