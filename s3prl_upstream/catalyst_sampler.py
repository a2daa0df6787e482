"""A stand-in for ``catalyst.data.sampler.DistributedSamplerWrapper``.

s3prl's KS (speech_commands) expert imports it from catalyst, which s3prl does not declare;
catalyst's newest release (22.4) has package metadata that current pip refuses. This class is
all that expert uses: under DDP, each process takes its share of what a sampler draws.
"""

from typing import Iterator, Optional

from torch.utils.data import DistributedSampler, Sampler


class DistributedSamplerWrapper(DistributedSampler):
    """Split the indices ``sampler`` draws each epoch across the DDP processes."""

    def __init__(
        self, sampler: Sampler, num_replicas: Optional[int] = None, rank: Optional[int] = None, shuffle: bool = True
    ):
        super().__init__(range(len(sampler)), num_replicas=num_replicas, rank=rank, shuffle=shuffle)
        self.sampler = sampler

    def __iter__(self) -> Iterator[int]:
        drawn = list(self.sampler)
        return (drawn[position] for position in super().__iter__())
