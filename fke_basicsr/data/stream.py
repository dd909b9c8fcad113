"""A training data stream that can be resumed mid-epoch, bit for bit (docs/reliability.md, "Exact resume").

BasicSR's loop restarts the interrupted epoch from its first batch after ``--auto_resume`` and its loader
workers reseed their augmentation RNGs to the same values every epoch, so a resumed run sees other crops and
flips than an uninterrupted one. Here:

* :class:`ResumableSampler` is BasicSR's EnlargedSampler (same per-epoch permutation, same rank split) that
  yields ``(index, item_seed)`` pairs, the seed a function of (manual_seed, epoch, rank, position in the
  epoch), and can start one given epoch some samples in (the skip applies from ``set_epoch``, which BasicSR's loop
  calls before it iterates, not to the iterator its prefetcher makes at start-up);
* :class:`SeededItems` wraps the datasets (a failing item is named by its file): each item's crop/flip/rotation draws come from its own seed,
  whatever worker (or the main process) loads it, and the caller's RNG states are left untouched;
* the loaders get a private ``torch.Generator``, so starting an epoch's iterator never draws from the
  global torch RNG the model trains with.

With these, the data of iteration ``i`` depends only on the options and ``i``: resuming at iteration ``I`` of
epoch ``E`` skips ``I - E * iters_per_epoch`` batches of epoch ``E`` without loading them.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from basicsr.data.data_sampler import EnlargedSampler
from torch.utils.data import Dataset

__all__ = ['ResumableSampler', 'SeededItems', 'item_seed']

_MASK = (1 << 63) - 1


def item_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 63-bit seed for one item of the stream (splitmix64-style mixing of the four integers)."""
    x = 0x9E3779B97F4A7C15
    for v in (int(seed), int(epoch), int(rank), int(position)):
        x = (x ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & _MASK


class ResumableSampler(EnlargedSampler):
    """EnlargedSampler yielding ``(index, item_seed)``; ``skip_next_epoch(n)`` starts the next pass n samples in."""

    def __init__(self, dataset, num_replicas: int, rank: int, ratio: int = 1, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas, rank, ratio)
        self.seed = int(seed or 0)
        self._pending: tuple[int, int] | None = None  # (epoch, samples) to skip once that epoch is set
        self._skip = 0

    def skip_in_epoch(self, epoch: int, samples: int) -> None:
        """When ``set_epoch(epoch)`` is next called, that pass starts ``samples`` samples in."""
        self._pending = (int(epoch), max(0, int(samples)))

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._skip = 0
        if self._pending is not None and self._pending[0] == epoch:
            self._skip, self._pending = self._pending[1], None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        start = self._skip
        return iter([(idx, item_seed(self.seed, self.epoch, self.rank, pos))
                     for pos, idx in enumerate(indices) if pos >= start])


class SeededItems(Dataset):
    """A dataset whose ``(index, seed)`` items are drawn with their own python/numpy/torch RNG seed."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == 'dataset':  # not yet set (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self._load(key)
        index, seed = key
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        torch.manual_seed(seed)
        try:
            return self._load(index)
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

    def _load(self, index: int):
        from fke_basicsr.data.checks import DataError, item_error
        try:
            return self.dataset[index]
        except DataError:
            raise
        except Exception as err:  # a corrupt image: name its file instead of BasicSR's NoneType error
            raise item_error(self.dataset, index, err) from None
