"""Shared helpers of the dataset preparation scripts: layout checks with readable errors, pairing by file stem,
streaming copies/conversions that a re-run skips, overlapping crops, and streaming LMDB via BasicSR.

Every writer goes through a temporary name and an atomic rename, so an interrupted run never leaves a half
written file that a re-run would mistake for a finished one.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class LayoutError(ValueError):
    """The source folder does not look like the dataset as distributed."""


def require_dir(path: Path, what: str) -> Path:
    """``path`` must be an existing folder; otherwise say which folder of which layout was expected."""
    if not path.is_dir():
        raise LayoutError(f'expected {what} at {path}, but it is missing or not a folder')
    return path


def list_images(folder: Path, what: str, exts: Iterable[str] = IMAGE_EXTS) -> dict[str, Path]:
    """Map file stem -> path for the images directly inside ``folder``; two files sharing a stem is an error."""
    require_dir(folder, what)
    exts = tuple(e.lower() for e in exts)
    out: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith('.'):
            if p.stem in out:
                raise LayoutError(f'{folder} holds two images with stem {p.stem!r} ({out[p.stem].name}, {p.name}); '
                                  f'pairing is by stem, so keep one')
            out[p.stem] = p
    if not out:
        raise LayoutError(f'expected {what} at {folder} to contain images ({", ".join(exts)}), found none')
    return out


def pair_by_stem(inputs: dict[str, Path], targets: dict[str, Path], where: str) -> list[tuple[str, Path, Path]]:
    """Pairs (stem, input, target) matched by file stem — never by sort order; any unmatched file is an error."""
    only_in = sorted(set(inputs) - set(targets))
    only_gt = sorted(set(targets) - set(inputs))
    if only_in or only_gt:
        parts = []
        if only_in:
            parts.append(f'{len(only_in)} input(s) without a target, e.g. {only_in[:3]}')
        if only_gt:
            parts.append(f'{len(only_gt)} target(s) without an input, e.g. {only_gt[:3]}')
        raise LayoutError(f'{where}: inputs and targets must pair by file stem; ' + '; '.join(parts))
    return [(s, inputs[s], targets[s]) for s in natural_sorted(inputs)]


def natural_key(s: str) -> list:
    """Sort key treating digit runs as numbers ('img2' < 'img10'), as natsort does."""
    import re
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r'(\d+)', s)]


def natural_sorted(items: Iterable[str]) -> list[str]:
    return sorted(items, key=natural_key)


def _tmp_name(dst: Path) -> Path:
    return dst.with_name(f'.{dst.name}.partial{dst.suffix}')


def copy_file(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` unless an identical-size ``dst`` exists; returns True when it wrote."""
    if dst.exists() and dst.stat().st_size == src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dst)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def write_image(img: np.ndarray, dst: Path, params: list | None = None) -> None:
    """Write an image atomically (temporary name + rename)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dst)
    if not cv2.imwrite(str(tmp), img, params or []):
        raise OSError(f'could not write {dst}')
    os.replace(tmp, dst)


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    if img is None:
        raise LayoutError(f'{path} is not a readable image')
    return img


def convert_file(src: Path, dst: Path, fn: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Read ``src``, transform with ``fn``, write ``dst`` (skipped when ``dst`` exists); True when it wrote."""
    if dst.exists():
        return False
    write_image(fn(read_image(src)), dst)
    return True


def progress(items, desc: str, total: int | None = None) -> Iterator:
    """tqdm progress bar on stderr (disabled when stderr is not a terminal and FKE_PREP_QUIET is set)."""
    return tqdm(items, desc=desc, total=total, unit='img', file=sys.stderr,
                disable=bool(os.environ.get('FKE_PREP_QUIET')))


def export_pairs(pairs: Iterable[tuple[str, Path, Path]], out_input: Path, out_target: Path, desc: str,
                 input_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 target_fn: Callable[[np.ndarray], np.ndarray] | None = None,
                 input_ext: str | None = None, target_ext: str | None = None) -> int:
    """Copy (or convert with ``*_fn``) each pair to ``out_input/<name>`` and ``out_target/<name>``, streaming.

    Returns how many files were written (0 on a re-run over finished outputs).
    """
    pairs = list(pairs)
    written = 0
    for name, src_in, src_gt in progress(pairs, desc):
        for src, out_dir, fn, ext in ((src_in, out_input, input_fn, input_ext), (src_gt, out_target, target_fn,
                                                                                    target_ext)):
            dst = out_dir / f'{name}{ext or src.suffix.lower()}'
            if fn is None and (ext is None or ext == src.suffix.lower()):
                written += copy_file(src, dst)
            else:
                written += convert_file(src, dst, fn or (lambda a: a))
    return written


# --------------------------------------------------------------------------------------------- crops
def crop_starts(length: int, size: int, step: int) -> list[int]:
    """Window starts covering ``length``: every ``step``, the last one snapped to the border (NAFNet/BasicSR)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, step))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


class Journal:
    """Append-only list of finished keys, so an interrupted multi-file step resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.done = set(path.read_text().split()) if path.exists() else set()

    def mark(self, key: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a') as f:
            f.write(key + '\n')
        self.done.add(key)


def crop_pairs(pairs: Iterable[tuple[str, Path, Path]], out_input: Path, out_target: Path, size: int, step: int,
               desc: str) -> int:
    """Cut every pair into aligned ``size``² crops every ``step`` px as ``<name>_sNNN.png``; resumable."""
    if size <= 0 or step <= 0:
        raise ValueError(f'crop size and step must be positive, got size={size}, step={step}')
    journal = Journal(out_target.parent / f'.{out_target.name}_crops_done.txt')
    n = 0
    for name, src_in, src_gt in progress(list(pairs), desc):
        if name in journal.done:
            continue
        a, b = read_image(src_in), read_image(src_gt)
        if a.shape != b.shape:
            raise LayoutError(f'{name}: input {src_in} is {a.shape[:2]} but target {src_gt} is {b.shape[:2]}')
        idx = 0
        for y in crop_starts(a.shape[0], size, step):
            for x in crop_starts(a.shape[1], size, step):
                idx += 1
                for img, out_dir in ((a, out_input), (b, out_target)):
                    write_image(np.ascontiguousarray(img[y:y + size, x:x + size]), out_dir / f'{name}_s{idx:03d}.png')
                n += 1
        journal.mark(name)
    return n


# --------------------------------------------------------------------------------------------- LMDB
def make_lmdb(folder: Path, lmdb_path: Path, compress_level: int = 1) -> bool:
    """Pack every image of ``folder`` into ``lmdb_path`` with BasicSR's LmdbMaker (streamed, one image at a time).

    Keys are file stems and ``meta_info.txt`` is written, as BasicSR's LMDB backend expects. The database is
    built under a temporary name and renamed when complete; an existing ``lmdb_path`` is left as is (False).
    """
    import fke_basicsr  # noqa: F401  (compat shims before basicsr)
    from basicsr.utils.lmdb_util import LmdbMaker, read_img_worker

    if lmdb_path.suffix != '.lmdb':
        raise ValueError(f'lmdb path must end with .lmdb, got {lmdb_path}')
    if lmdb_path.exists():
        return False
    images = list_images(folder, f'images to pack into {lmdb_path.name}')
    tmp = lmdb_path.with_name(f'.{lmdb_path.stem}.partial.lmdb')
    if tmp.exists():
        shutil.rmtree(tmp)  # an interrupted build: LMDB transactions are not resumable image by image
    first = read_image(images[natural_sorted(images)[0]])
    per_image = cv2.imencode('.png', first, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])[1].nbytes
    maker = LmdbMaker(str(tmp), map_size=max(per_image * len(images) * 10, 1 << 24), compress_level=compress_level)
    for key in progress(natural_sorted(images), f'LMDB {lmdb_path.name}'):
        _, img_byte, shape = read_img_worker(str(images[key]), key, compress_level)
        maker.put(img_byte, key, shape)
    maker.close()
    os.replace(tmp, lmdb_path)
    return True


def report(name: str, counts: dict[str, int], expected: dict[str, int]) -> None:
    """Print what was prepared and flag splits whose count differs from the full dataset's."""
    for split, n in counts.items():
        exp = expected.get(split)
        note = '' if exp is None or exp == n else f'  (the full dataset has {exp:,}; this source holds a subset)'
        print(f'{name} {split}: {n:,} pairs{note}')


def run_cli(main: Callable[[], int]) -> int:
    """Run a script's ``main``; a layout problem prints one readable line and exits with status 2."""
    try:
        return main()
    except LayoutError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
