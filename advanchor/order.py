"""The training pass over the data, resumable mid-epoch: which samples epoch e visits, in which order,
and the posterior draws of "sample" latents are functions of (seed, epoch, position) alone, never of
how far an earlier iterator was pulled; so a run resumed at step g sees what an uninterrupted one sees
from g on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

if TYPE_CHECKING:
    from .data import ConceptLatents


def shuffled(size: int, batch_size: int, seed: int, epoch: int) -> list[int]:
    """Epoch `epoch`'s order in one process, replayed from the seed: the order that the earlier
    `DataLoader(shuffle=True, generator=seeded)` gave under Lightning, so that runs keep it. Each epoch, that
    loader's generator drew a worker seed, a permutation, and one more when the last batch was short (filling
    it asks the sampler past its end; Lightning asks for no batch past the last)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epoch + 1):
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(size, generator=generator)
        if size % batch_size:
            torch.randperm(size, generator=generator)
    return order.tolist()


class TrainOrder(DistributedSampler):
    """The training order: `shuffled` in one process, this rank's share of `DistributedSampler`'s order
    under DDP (a DistributedSampler, so that Lightning keeps it). A pass starts `done()` samples into the
    epoch: where the trainer stands in it, past 0 only in a run resumed mid-epoch."""

    def __init__(
        self,
        dataset: Dataset,
        seed: int,
        batch_size: int,
        done: Callable[[], int],
        num_replicas: int = 1,
        rank: int = 0,
    ):
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed)
        self.batch_size, self.done = batch_size, done

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if isinstance(self.dataset, EpochDraws):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        # Called at the pass's first batch, after Lightning has set the epoch and its own progress.
        if self.num_replicas > 1:
            order = list(super().__iter__())
        else:
            order = shuffled(len(self.dataset), self.batch_size, self.seed, self.epoch)
        return iter(order[self.done() :])


class ResumableLoader(DataLoader):
    """A loader that Lightning may stop and resume mid-epoch. Its place comes from the trainer's progress,
    which Lightning restores (`TrainOrder`); so it has no state of its own, and these only say it is resumable."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class EpochDraws(Dataset):
    """The training pass's view of latents drawn from the posterior: the draw of sample i in epoch e is
    seeded by (seed, e, i), not by the draws made before it."""

    def __init__(self, latents: ConceptLatents):
        self.latents, self.epoch = latents, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.latents)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        entropy = [self.latents.seed % 2**64, self.epoch, int(i)]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        return self.latents.draw(i, torch.Generator().manual_seed(seed))
