"""Build the Demo paired motion-blur dataset from scikit-image's bundled photos (no download).

Each sharp tile is blurred with its own random linear motion kernel (several lengths and angles), then mild
Gaussian noise is added and the result quantised to 8 bits. Kernels are saved as .npy next to the pairs for
kernel-correlation checks. ``--blur shake`` draws camera-shake kernels instead: random-walk trajectories
with momentum, up to 31 px across (33x33 kernels; the default ``line`` dataset is unchanged). The split is by
region: the bottom strip of each validation photo is kept for validation and never cropped for training (training
also uses texture/grey-level photos that have no validation strip).

Layout (names match the Demo options files and datasets/README.md)::

    datasets/Demo/{train,val}/blur/NNNN.png     blurry input
    datasets/Demo/{train,val}/sharp/NNNN.png    ground truth
    datasets/Demo/{train,val}/kernels/NNNN.npy  float32 21x21 kernel (33x33 with --blur shake), sums to 1
    datasets/Demo/{train,val}/{blur,sharp}.lmdb BasicSR LMDBs of the same images (keys NNNN)

Usage: python scripts/make_demo_dataset.py [--out datasets/Demo] [--seed 0] [--force] [--blur line|shake]
The build is deterministic for a seed and is skipped when the folder is already complete.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import sys
from typing import Iterator

import numpy as np

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
KERNEL_SIZE = 21
# Motion lengths in pixels (each kernel draws one, and a uniform angle in [0, 180)): hand-held shake at a short
# exposure. Up to 13 px the demo network learns the long kernels too slowly for a 15-minute CPU run (docs/demo.md).
LENGTHS = (3, 5, 7, 9)
# Camera shake (--blur shake): the trajectory's extent (the larger side of its bounding box) is uniform in this range.
SHAKE_EXTENT, SHAKE_KERNEL_SIZE, SHAKE_STEPS = (5.0, 31.0), 33, 200
BLURS = ('line', 'shake')
NOISE_SIGMA = (0.0, 0.01)  # per image, uniform, on the [0, 1] scale: "mild" noise
VAL_PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry')  # colour photos
TRAIN_PHOTOS = VAL_PHOTOS + ('hubble_deep_field', 'retina', 'colorwheel', 'camera', 'coins', 'moon', 'brick', 'grass',
                             'gravel', 'clock', 'text', 'page')
TRAIN_TILE, TRAIN_STRIDE, MAX_TRAIN = 128, 64, 240
VAL_TILE, VAL_PER_PHOTO = (128, 192), 2  # (H, W): non-square, multiples of 8
VAL_STRIP = 160  # bottom rows of each validation photo, reserved for validation
DONE_MARKER = 'COMPLETE.json'


def motion_kernel(length: float, angle: float, size: int = KERNEL_SIZE) -> np.ndarray:
    """Anti-aliased linear motion-blur kernel: a centred segment of ``length`` px at ``angle`` rad, sum 1."""
    k = np.zeros((size, size), np.float64)
    c = (size - 1) / 2
    for t in np.linspace(-length / 2, length / 2, int(length * 10) + 1):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):  # bilinear splat keeps sub-pixel segments smooth
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    k[y0 + dy, x0 + dx] += wy * wx
    return (k / k.sum()).astype(np.float32)


def _splat(points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear splat of (n, 2) (x, y) points, equal weight each, into a size x size kernel that sums to 1."""
    k = np.zeros((size, size), np.float64)
    for x, y in points:
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    k[y0 + dy, x0 + dx] += wy * wx
    return k / k.sum()


def shake_kernel(rng: np.random.Generator, extent: tuple[float, float] = SHAKE_EXTENT,
                 size: int = SHAKE_KERNEL_SIZE, steps: int = SHAKE_STEPS) -> np.ndarray:
    """Camera-shake kernel: a 2-D random walk with momentum (velocity changes by Gaussian kicks, occasionally a
    jerk), sampled at equal time steps so slow parts of the path get more exposure; scaled so its bounding box's
    larger side is uniform in ``extent`` px, its bounding box centred in the kernel, splatted bilinearly; sum 1."""
    v = rng.normal(size=2)
    v /= np.linalg.norm(v)
    pos, path = np.zeros(2), []
    for _ in range(steps):
        kick = rng.normal(scale=0.3, size=2)
        if rng.random() < 0.03:  # an abrupt jerk of the hand
            kick += rng.normal(scale=2.0, size=2)
        v = 0.9 * v + kick
        pos = pos + v
        path.append(pos)
    path = np.asarray(path)
    span = float((path.max(0) - path.min(0)).max())
    target = float(rng.uniform(*extent))
    path = (path - (path.max(0) + path.min(0)) / 2) * (target / max(span, 1e-9))
    c = (size - 1) / 2
    dense = np.concatenate([np.linspace(a, b, 8, endpoint=False) for a, b in zip(path[:-1], path[1:])] + [path[-1:]])
    return _splat(dense + c, size).astype(np.float32)


def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB in [0, 1], long side at most 512 px."""
    import cv2
    from skimage import data
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float32) / 255.0
    scale = 512 / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return img


def tiles(img: np.ndarray, tile: tuple[int, int], stride: int, rows: tuple[int, int],
          kernel_size: int = KERNEL_SIZE) -> Iterator[tuple[int, int]]:
    """Top-left corners of ``tile`` windows (with the kernel margin around them) inside image rows [r0, r1)."""
    w = img.shape[1]
    m = kernel_size // 2  # keep a margin so every blurred pixel sees real image content
    th, tw = tile
    for y in range(rows[0] + m, rows[1] - th - m + 1, stride):
        for x in range(m, w - tw - m + 1, stride):
            yield y, x


def blur_tile(img: np.ndarray, y: int, x: int, tile: tuple[int, int], kernel: np.ndarray, sigma: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(blurred+noisy, sharp) uint8 RGB tiles: 'valid' convolution of the tile with its margin, then noise."""
    import cv2
    m = kernel.shape[0] // 2
    th, tw = tile
    region = img[y - m:y + th + m, x - m:x + tw + m]
    # filter2D correlates; flipping the kernel makes it a true convolution with the saved kernel.
    blurred = cv2.filter2D(region, -1, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)[m:-m, m:-m]
    blurred = blurred + rng.normal(0.0, sigma, blurred.shape).astype(np.float32)
    sharp = region[m:-m, m:-m]
    to_u8 = lambda a: (np.clip(a, 0, 1) * 255.0).round().astype(np.uint8)  # noqa: E731
    return to_u8(blurred), to_u8(sharp)


def write_split(out: str, photos: tuple[str, ...], tile: tuple[int, int], stride: int, limit: int | None,
                per_photo: int | None, val: bool, rng: np.random.Generator, kind: str = 'line') -> int:
    import cv2
    for sub in ('blur', 'sharp', 'kernels'):
        os.makedirs(osp.join(out, sub), exist_ok=True)
    jobs = []
    for name in photos:
        img = load_photo(name)
        h = img.shape[0]
        strip = h - VAL_STRIP if name in VAL_PHOTOS else h  # first row of the validation strip
        ksize = SHAKE_KERNEL_SIZE if kind == 'shake' else KERNEL_SIZE
        pos = list(tiles(img, tile, stride, (strip, h) if val else (0, strip), ksize))
        if per_photo is not None:
            pos = [pos[i] for i in sorted(rng.choice(len(pos), size=min(per_photo, len(pos)), replace=False))]
        jobs += [(img, y, x) for y, x in pos]
    if limit is not None and len(jobs) > limit:
        jobs = [jobs[i] for i in sorted(rng.choice(len(jobs), size=limit, replace=False))]
    for i, (img, y, x) in enumerate(jobs):
        if kind == 'shake':
            kernel = shake_kernel(rng)
        else:
            kernel = motion_kernel(float(rng.choice(LENGTHS)), float(rng.uniform(0, np.pi)))
        blur, sharp = blur_tile(img, y, x, tile, kernel, float(rng.uniform(*NOISE_SIGMA)), rng)
        key = f'{i:04d}'
        cv2.imwrite(osp.join(out, 'blur', f'{key}.png'), blur[..., ::-1])  # RGB -> BGR for OpenCV
        cv2.imwrite(osp.join(out, 'sharp', f'{key}.png'), sharp[..., ::-1])
        np.save(osp.join(out, 'kernels', f'{key}.npy'), kernel)
    return len(jobs)


def write_lmdb(split_dir: str) -> None:
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    for sub in ('blur', 'sharp'):
        folder = osp.join(split_dir, sub)
        names = sorted(f for f in os.listdir(folder) if f.endswith('.png'))
        make_lmdb_from_imgs(folder, osp.join(split_dir, f'{sub}.lmdb'), names, [osp.splitext(n)[0] for n in names],
                            multiprocessing_read=False, map_size=64 * 1024 ** 2 + 4 * sum(
                                osp.getsize(osp.join(folder, n)) for n in names))


def is_complete(out: str, seed: int = 0, blur: str = 'line') -> bool:
    """True when ``out`` was fully built with this script's current seed, kernel lengths and noise."""
    try:
        with open(osp.join(out, DONE_MARKER)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if (meta.get('seed'), meta.get('lengths'), meta.get('noise_sigma'), meta.get('blur', 'line')) != (
            seed, list(LENGTHS), list(NOISE_SIGMA), blur):
        return False
    missing = missing_files(out, meta)
    if missing:
        print(f'Demo dataset at {out} is incomplete: {missing[0]}{f" and {len(missing) - 1} more" if len(missing) > 1 else ""}'
              ' missing since it was written; rebuilding it.')
        return False
    return True


def missing_files(out: str, meta: dict) -> list[str]:
    """Files COMPLETE.json promises (pair counts per split, the lmdb databases if any) that are not there."""
    missing = []
    for split in ('train', 'val'):
        count = meta.get(split)
        for sub in ('blur', 'sharp'):
            folder = osp.join(out, split, sub)
            have = len([f for f in os.listdir(folder) if f.endswith('.png')]) if osp.isdir(folder) else 0
            if isinstance(count, int) and have < count:
                missing.append(f'{count - have} of {count} images in {folder}')
            lmdb = osp.join(out, split, f'{sub}.lmdb')
            if meta.get('lmdb', osp.isdir(lmdb)) and not osp.isfile(osp.join(lmdb, 'data.mdb')):
                missing.append(osp.join(lmdb, 'data.mdb'))
    return missing


def _refuse(message: str) -> None:
    print(f'error: {message}', file=sys.stderr)
    raise SystemExit(2)


def check_out(out: str) -> None:
    """Refuse an --out that is a file, or a folder holding something other than a Demo dataset (never deleted)."""
    if osp.exists(out) and not osp.isdir(out):
        _refuse(f'--out {out} is a file; give a folder for the Demo dataset (it is created).')
    if osp.isdir(out) and os.listdir(out) and not osp.isfile(osp.join(out, DONE_MARKER)):
        _refuse(f'--out {out} already holds files that are not a Demo dataset (no {DONE_MARKER}); it would be '
                'replaced: choose an empty or new folder.')
    parent = osp.dirname(osp.abspath(out))
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not os.access(parent, os.W_OK):
        _refuse(f'--out {out}: {parent} is not writable; choose a folder you can write to.')


def make_demo_dataset(out: str = osp.join(ROOT, 'datasets', 'Demo'), seed: int = 0, force: bool = False,
                      lmdb: bool = True, blur: str = 'line') -> str:
    """Build the dataset under ``out`` (skipped when complete unless ``force``); returns ``out``."""
    if blur not in BLURS:
        raise ValueError(f'blur: expected one of {BLURS}, got {blur!r}')
    if is_complete(out, seed, blur) and not force:
        print(f'Demo dataset already present at {out} (delete it or pass --force to rebuild).')
        return out
    import fke_basicsr  # noqa: F401  (compat shims before basicsr is imported)
    check_out(out)
    tmp = f'{out}.tmp'
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier build
    rng = np.random.default_rng(seed)
    n_train = write_split(osp.join(tmp, 'train'), TRAIN_PHOTOS, (TRAIN_TILE, TRAIN_TILE), TRAIN_STRIDE, MAX_TRAIN, None,
                          False, rng, blur)
    n_val = write_split(osp.join(tmp, 'val'), VAL_PHOTOS, VAL_TILE, VAL_TILE[1] // 2, None, VAL_PER_PHOTO, True, rng,
                        blur)
    if lmdb:
        write_lmdb(osp.join(tmp, 'train'))
        write_lmdb(osp.join(tmp, 'val'))
    with open(osp.join(tmp, DONE_MARKER), 'w') as f:
        json.dump({'seed': seed, 'train': n_train, 'val': n_val, 'kernel_size': KERNEL_SIZE,
                   'lengths': LENGTHS, 'angles': 'uniform [0, pi)', 'noise_sigma': NOISE_SIGMA, 'train_photos': TRAIN_PHOTOS,
                   'val_photos': VAL_PHOTOS, 'val_strip_rows': VAL_STRIP, 'lmdb': bool(lmdb),
                   **({} if blur == 'line' else {'blur': blur, 'kernel_size': SHAKE_KERNEL_SIZE,
                                                 'shake_extent': SHAKE_EXTENT})}, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)  # appears complete or not at all
    print(f'Demo dataset written to {out}: {n_train} train pairs ({TRAIN_TILE}x{TRAIN_TILE}), {n_val} val pairs '
          f'({VAL_TILE[0]}x{VAL_TILE[1]}).')
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=osp.join(ROOT, 'datasets', 'Demo'), help='output folder')
    p.add_argument('--seed', type=int, default=0, help='random seed (kernels, noise, tile choice)')
    p.add_argument('--force', action='store_true', help='rebuild even if the folder is complete')
    p.add_argument('--no-lmdb', action='store_true', help='write only the PNG folders')
    p.add_argument('--blur', choices=BLURS, default='line',
                   help='line: straight motion kernels of 3-9 px (default, the demo); shake: random-walk camera-shake '
                        f'kernels up to {SHAKE_EXTENT[1]:g} px (scripts/fke_evidence.py)')
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    check_out(args.out)  # before 20 s of work, not after
    try:
        make_demo_dataset(args.out, args.seed, args.force, not args.no_lmdb, args.blur)
    except KeyboardInterrupt:
        shutil.rmtree(f'{args.out}.tmp', ignore_errors=True)
        print('make_demo_dataset: interrupted (Ctrl-C); the partial build was removed.', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
