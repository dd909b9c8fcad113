"""Datasets (DATASET_REGISTRY) BasicSR's PairedImageDataset cannot replace, from *_dataset.py."""
from pathlib import Path

from fke_basicsr.registry import import_modules

_modules = import_modules(__name__, Path(__file__).parent, '_dataset')
