"""Shared by the stand-in datasets: (audio path, token ids) items grouped into buckets."""

from typing import List, Sequence, Tuple

from torch.utils.data import Dataset

Item = Tuple[str, List[int]]


class BucketDataset(Dataset):
    """Items in buckets of ``bucket_size``: one bucket per index, as s3prl's ctc loader wants."""

    def __init__(self, items: Sequence[Item], bucket_size: int):
        self.buckets = [list(items[i : i + bucket_size]) for i in range(0, len(items), bucket_size)]

    def __len__(self) -> int:
        return len(self.buckets)

    def __getitem__(self, index: int) -> List[Item]:
        return self.buckets[index]
