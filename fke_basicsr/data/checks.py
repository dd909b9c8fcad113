"""Dataset problems found before training, and a failing item named by its file (docs/reliability.md).

BasicSR discovers an empty folder as a ZeroDivisionError, unpaired names as a bare AssertionError, an lmdb
backend on a plain folder deep inside lmdb, and a corrupt image as ``'NoneType' object has no attribute
'astype'`` minutes into training. :func:`check_dataset_files` finds the first three from the folder listings
before any folder is made; :func:`item_error` turns the fourth into one line naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fke_basicsr.io_utils import UserError

__all__ = ['DataError', 'check_dataset_files', 'item_error']

PAIRED_TYPES = ('PairedImageDataset', 'PairedPadCropDataset')
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class DataError(UserError):
    """A dataset that cannot be read as configured; the message names the file or folder and the fix."""


def _images(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_dataset_files(phase: str, dataset: dict) -> None:
    """Backend vs folder kind, empty folders and gt/lq name pairing of a paired dataset (disk or lmdb)."""
    if dataset.get('type') not in PAIRED_TYPES:
        return
    backend = ((dataset.get('io_backend') or {}).get('type') or 'disk')
    roots = {k: dataset.get(k) for k in ('dataroot_gt', 'dataroot_lq') if isinstance(dataset.get(k), str)}
    for key, root in roots.items():
        path = Path(os.path.expanduser(root))
        if not path.is_dir():
            raise DataError(f'datasets.{phase}.{key}: {root} is not a folder; point it to the folder of images '
                            '(or of a .lmdb database).')
        if backend == 'lmdb' and not (path / 'data.mdb').is_file():
            raise DataError(f'datasets.{phase}.{key}: {root} is a plain folder, not an lmdb database (no data.mdb), '
                            f'but datasets.{phase}.io_backend.type is lmdb; set `io_backend: {{type: disk}}` or '
                            'point it to a .lmdb folder made by scripts/data_preparation/.')
        if backend == 'lmdb' and not (path / 'meta_info.txt').is_file():
            raise DataError(f'datasets.{phase}.{key}: {root}/meta_info.txt is missing; rebuild the lmdb with '
                            'scripts/data_preparation/ (it lists the keys).')
        if backend == 'disk' and (path / 'data.mdb').is_file():
            raise DataError(f'datasets.{phase}.{key}: {root} is an lmdb database but io_backend.type is disk; set '
                            '`io_backend: {type: lmdb}`.')
    if backend != 'disk' or dataset.get('meta_info_file') or len(roots) != 2:
        return
    listing = {k: _images(Path(os.path.expanduser(v))) for k, v in roots.items()}
    for key, names in listing.items():
        if not names:
            raise DataError(f'datasets.{phase}.{key}: {roots[key]} holds no images ({", ".join(IMAGE_SUFFIXES)}); '
                            'prepare the dataset (datasets/README.md) or fix the path.')
    tmpl = dataset.get('filename_tmpl', '{}')
    lq = set(listing['dataroot_lq'])
    for name in listing['dataroot_gt']:
        stem, ext = os.path.splitext(name)
        partner = f'{tmpl.format(stem)}{ext}'
        if partner not in lq:
            raise DataError(f"datasets.{phase}: {Path(roots['dataroot_gt']) / name} has no input "
                            f"{Path(roots['dataroot_lq']) / partner} (filename_tmpl {tmpl!r}); give both folders the "
                            'same file names, or set filename_tmpl.')
    if len(lq) != len(listing['dataroot_gt']):
        raise DataError(f"datasets.{phase}: {len(lq)} input images in {roots['dataroot_lq']} but "
                        f"{len(listing['dataroot_gt'])} targets in {roots['dataroot_gt']}; remove the unpaired ones.")


def item_error(dataset: Any, index: int, err: BaseException) -> DataError:
    """One line naming the file of item ``index`` that could not be loaded (and which of the pair failed)."""
    paths = getattr(dataset, 'paths', None)
    entry = paths[index] if isinstance(paths, (list, tuple)) and 0 <= index < len(paths) else None
    name = (getattr(dataset, 'opt', None) or {}).get('name', 'dataset')
    files = [v for k, v in entry.items() if k.endswith('_path')] if isinstance(entry, dict) else []
    bad = files
    if files and all(os.path.isfile(f) for f in files):
        import cv2
        bad = [f for f in files if cv2.imread(f, cv2.IMREAD_UNCHANGED) is None] or files
    where = ' or '.join(str(f) for f in bad) or f'item {index}'
    first = (str(err).splitlines() or [''])[0]
    return DataError(f'dataset {name}: cannot load {where} ({type(err).__name__}: {first}); the image is corrupt or '
                     'not an image: replace or remove it (and its partner).')
