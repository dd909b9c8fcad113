"""The process's random-number states as tensors and plain numbers, for training states loaded weights-only."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ['get_rng_states', 'set_rng_states']


def get_rng_states() -> dict[str, Any]:
    """python ``random``, numpy's global RandomState, torch's CPU generator and every CUDA generator in use."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        'python': [int(version), list(internal), gauss],
        'numpy': {'name': str(name), 'keys': torch.from_numpy(np.asarray(keys, dtype=np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_states` captured (the CUDA part only where as many devices are present)."""
    version, internal, gauss = states['python']
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = states['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), int(n['pos']), int(n['has_gauss']),
                         float(n['cached_gaussian'])))
    torch.set_rng_state(states['torch'].cpu())
    cuda = states.get('cuda')
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
