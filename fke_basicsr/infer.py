"""Restore an image or a folder in one command, no ground truth needed (docs/evaluation.md, Test-time protocol).

Usage::

    python -m fke_basicsr.infer -i blurry/ -o results/ --arch DeepRFTv2 --variant B --weights net_g.pth
    python -m fke_basicsr.infer -i img.png -o out/ --opt options/test/SR/test_ATD_light_FKE_SRx4.yml --device cuda

Images: png / jpg / jpeg / tif / tiff / bmp / webp read with ``cv2.IMREAD_UNCHANGED``; 8-bit and 16-bit integer
images are scaled to [0, 1] by 255 / 65535 and written back at the same bit depth (float tifs are taken as [0, 1]
and written as float32). Outputs keep the file name (and therefore the format) in the output folder and are
written atomically (temporary file in that folder, then ``os.replace``). Grayscale images (H×W or H×W×1) are
replicated to the model's 3 channels and the restored channels averaged back to one. An alpha channel is kept
apart and re-attached unchanged (bicubic-resized by the scale for super-resolution). Files with other extensions
in a folder are skipped; unreadable files print one ``error:`` line each, the others are still processed, and the
exit status is 1 if any file failed (2 for a usage, options or weights error).

Each image runs through :class:`fke_basicsr.protocol.TestTimeProtocol`: reflect-padded to the arch's
``size_multiple`` (8 for DeepRFTv2), cut into overlapping tiles (``--tile``, ``--tile-overlap``; rounded down to
that multiple so every tile is a valid input and all tiles see the same pixel grid phase; DeepRFTv2 and ATD cut
them from their whole-image pyramid / features, as in evaluation) that are blended seam-free, with only
``--tile-batch`` tiles at a time on the device (the image and the output canvas stay on the CPU), then cropped
back. ``--tile 0`` runs the whole image at once. On CUDA out-of-memory the tile side is halved (logged) and the
image retried; the smaller tile is kept for the next images.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fke_basicsr.build import load_model, sha256sum  # noqa: F401  (re-exported: the CLI's builder)
from fke_basicsr.protocol import TestTimeProtocol

__all__ = ['IMAGE_EXTENSIONS', 'ImageReadError', 'list_images', 'read_image', 'write_image_atomic', 'sha256sum',
           'image_to_tensor', 'tensor_to_image', 'Restorer', 'load_model', 'main']

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
_AMP = {'bf16': torch.bfloat16, 'fp16': torch.float16}
MIN_TILE = 32   # the OOM back-off stops below this side


class ImageReadError(ValueError):
    """A file that is not a readable image of a supported kind."""


# ------------------------------------------------------------------------------------------------ image I/O


def list_images(path: str | os.PathLike) -> list[Path]:
    """The file itself, or the files of a folder with an image extension, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    raise ValueError(f'input: {path} is neither a file nor a folder')


def read_image(path: str | os.PathLike) -> np.ndarray:
    """cv2.IMREAD_UNCHANGED read (H×W, H×W×1, ×3 BGR or ×4 BGRA; uint8, uint16 or float); ImageReadError if unfit."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)   # fromfile + imdecode also handles non-ASCII paths
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except (OSError, cv2.error) as err:
        raise ImageReadError(f'cannot read the file: {err}') from None
    if img is None:
        raise ImageReadError('not a decodable image (corrupt or unsupported format)')
    if img.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise ImageReadError(f'pixel type {img.dtype} is not supported (expected 8/16-bit integers or float)')
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImageReadError(f'{img.shape[2]} channels are not supported (expected 1, 3 or 4)')
    return img


def write_image_atomic(path: str | os.PathLike, img: np.ndarray) -> None:
    """Encode by ``path``'s extension, write a temporary file beside it, then os.replace: never a torn file."""
    import cv2

    from fke_basicsr.io_utils import atomic_write

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:
        raise ValueError(f'cannot encode {img.dtype} image with {img.shape} as {path.suffix}')
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(buf.tobytes()))  # the user's umask, not mkstemp's 0600


@dataclass
class ImageMeta:
    """What tensor_to_image needs to write the result like the input."""
    dtype: np.dtype
    gray: bool
    alpha: np.ndarray | None


def image_to_tensor(img: np.ndarray, channels: int = 3) -> tuple[Tensor, ImageMeta]:
    """cv2 image → (1, channels, H, W) float32 RGB in [0, 1] (see the module docstring for gray / alpha)."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    alpha = None
    if img.ndim == 3 and img.shape[2] == 4:
        img, alpha = img[..., :3], img[..., 3]
    gray = img.ndim == 2
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(img.dtype, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(img).astype(np.float32) / np.float32(scale))
    if gray:
        x = x[None].expand(channels, -1, -1)
    else:
        if channels != 3:
            raise ValueError(f'image: the model takes {channels} channel(s) but the image is colour; convert it first')
        x = x.flip(-1).permute(2, 0, 1)   # BGR → RGB, channels first
    return x[None].contiguous(), ImageMeta(img.dtype, gray, alpha)


def tensor_to_image(y: Tensor, meta: ImageMeta, scale: int = 1) -> np.ndarray:
    """(1, C, H, W) result → cv2 image with the input's dtype, channel layout and alpha."""
    import cv2

    y = y[0].detach().float().clamp(0, 1).cpu()
    if meta.gray:
        arr = y.mean(0).numpy()
    else:
        arr = y.permute(1, 2, 0).flip(-1).numpy()   # RGB → BGR
    if meta.dtype == np.uint8:
        arr = (arr * 255.0).round().astype(np.uint8)
    elif meta.dtype == np.uint16:
        arr = (arr * 65535.0).round().astype(np.uint16)
    else:
        arr = arr.astype(np.float32)
    if meta.alpha is not None:
        a = meta.alpha
        if scale != 1:
            a = cv2.resize(a, (arr.shape[1], arr.shape[0]), interpolation=cv2.INTER_CUBIC)
        if meta.gray:
            arr = np.repeat(arr[..., None], 3, axis=2)
        arr = np.concatenate([arr, a.astype(arr.dtype)[..., None]], axis=2)
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------------ model running


def _input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or 'out of memory' in str(err).lower()


class Restorer:
    """Pad → overlapping tiles on the device one batch at a time → blend → crop (module docstring).

    Args:
        model: eval-mode network; its ``size_multiple`` and ``upscale`` attributes are used when present.
        device: where the tiles run (the model is moved there).
        tile, overlap: tile side and overlap in input pixels (0 / None tile: the whole image at once).
        scale: output / input size ratio (default: the model's ``upscale``, else 1).
        amp: None, 'bf16' or 'fp16' autocast for the model.
        tile_batch: tiles per forward.
        multiple: pad multiple (default: the model's ``size_multiple``, else 1).
        log: where messages (e.g. the OOM back-off) go.
    """

    def __init__(self, model: nn.Module, device: str | torch.device = 'cpu', tile: int | None = 512,
                 overlap: int = 128, scale: int | None = None, amp: str | None = None, tile_batch: int = 1,
                 multiple: int | None = None, log: Callable[[str], Any] = print):
        if amp is not None and amp not in _AMP:
            raise ValueError(f'amp: expected one of {sorted(_AMP)} or None, got {amp!r}')
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
            raise ValueError(f'tile: expected an int >= 0 (0: whole image), got {tile!r}')
        if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
            raise ValueError(f'overlap: expected an int >= 0, got {overlap!r}')
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.multiple = int(multiple or getattr(model, 'size_multiple', 1) or 1)
        self.scale = int(scale or getattr(model, 'upscale', 1) or 1)
        if self.scale < 1:
            raise ValueError(f'scale: expected a positive int, got {scale!r}')
        self.amp, self.tile_batch, self.log = amp, int(tile_batch), log
        self.channels = _input_channels(model)
        self.tile, self.overlap = None, overlap
        if tile:
            self.tile, self.overlap = self._fit_tile(tile, overlap)

    def _fit_tile(self, tile: int, overlap: int) -> tuple[int, int]:
        """Round tile and overlap down to the pad multiple (every tile valid, same pixel grid phase)."""
        m = self.multiple
        t = max(m, tile // m * m)
        o = min(overlap // m * m, t - m) if overlap else 0
        if (t, o) != (tile, overlap):
            self.log(f'tile {tile}/overlap {overlap} rounded to {t}/{o} (multiples of {m}, overlap < tile)')
        return t, o

    def protocol(self, pad_mode: str = 'reflect') -> TestTimeProtocol:
        """The test-time protocol of the current tile settings."""
        return TestTimeProtocol(size_multiple=self.multiple, pad_mode=pad_mode, tile=self.tile,
                                overlap=self.overlap if self.tile else 0, batch=self.tile_batch, scale=self.scale)

    def __call__(self, x: Tensor) -> Tensor:
        """(B, C, H, W) CPU tensor → (B, C', H·scale, W·scale) on the CPU."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f'x: expected a (B, C, H, W) tensor, got '
                             f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
        h, w = x.shape[-2:]
        mode = 'reflect' if min(h, w) >= 2 else 'replicate'
        amp = (torch.autocast(device_type=self.device.type, dtype=_AMP[self.amp]) if self.amp
               else contextlib.nullcontext())
        while True:
            tile = self.tile or max(h + -h % self.multiple, w + -w % self.multiple)
            try:
                with torch.no_grad(), amp:
                    y = self.protocol(mode)(self.model, x, device=self.device)
                y = y.float() if self.amp else y
                break
            except RuntimeError as err:
                if self.device.type != 'cuda' or not _is_oom(err):
                    raise
                torch.cuda.empty_cache()
                smaller = tile // 2 // self.multiple * self.multiple
                if smaller < max(MIN_TILE, self.multiple):
                    raise RuntimeError(f'CUDA out of memory even at tile {tile}; use --device cpu') from err
                self.log(f'CUDA out of memory at tile {tile}: retrying with tile {smaller}, overlap '
                         f'{min(self.overlap, smaller // 4) // self.multiple * self.multiple}')
                self.tile, self.overlap = smaller, min(self.overlap, smaller // 4) // self.multiple * self.multiple
        return y

    def restore_image(self, img: np.ndarray) -> np.ndarray:
        """A cv2 image in, the restored cv2 image (same dtype / layout) out."""
        x, meta = image_to_tensor(img, self.channels)
        return tensor_to_image(self(x), meta, self.scale)


# ------------------------------------------------------------------------------------------------ model loading


# ------------------------------------------------------------------------------------------------ CLI


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer, got {text!r}') from None
        if value < low:
            raise argparse.ArgumentTypeError(f'expected an integer >= {low}, got {value}')
        return value
    return parse


def _device(text: str) -> str:
    import re
    m = re.fullmatch(r'(cpu|cuda)(?::(\d+))?', text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    if m.group(1) == 'cuda':
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise argparse.ArgumentTypeError(f'{text} requested but CUDA is not available; use --device cpu')
        if m.group(2) is not None and int(m.group(2)) >= n:
            raise argparse.ArgumentTypeError(f'{text} but only {n} GPU(s) are present (cuda:0..{n - 1})')
    return text


def _sha256(text: str) -> str:
    import re
    if not re.fullmatch(r'[0-9a-fA-F]{64}', text.strip()):
        raise argparse.ArgumentTypeError(f'expected 64 hexadecimal digits, got {text!r}')
    return text.strip()


def _parser() -> argparse.ArgumentParser:
    from fke_basicsr.io_utils import OneLineParser

    p = OneLineParser(prog='python -m fke_basicsr.infer', description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='\n'.join(__doc__.split('\n')[7:]))
    p.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    p.add_argument('-o', '--output', required=True, help='output folder (file names are kept)')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--opt', help='train/test YAML: network_g, path.pretrain_network_g, path.param_key_g, scale')
    src.add_argument('--arch', help='registered arch name (DeepRFTv2, ATD, FKEAttach, ...)')
    p.add_argument('--variant', help="arch variant (DeepRFTv2: 'B' or 'S')")
    p.add_argument('--set', dest='sets', action='append', metavar='KEY=VALUE',
                   help='override a network option (YAML value), repeatable, e.g. --set upscale=4 --set fke=true')
    p.add_argument('--weights', help='checkpoint (.pth); overrides path.pretrain_network_g of --opt')
    p.add_argument('--param-key', choices=('params', 'params_ema'),
                   help='state dict inside the checkpoint (default: params, else params_ema)')
    p.add_argument('--sha256', type=_sha256, help='expected sha256 of the weights file (checked before loading)')
    p.add_argument('--tile', type=_int_at_least(0, '--tile'), default=512, help='tile side in input pixels; 0 = whole image (default 512)')
    p.add_argument('--tile-overlap', type=_int_at_least(0, '--tile-overlap'), default=128, help='tile overlap in input pixels (default 128)')
    p.add_argument('--tile-batch', type=_int_at_least(1, '--tile-batch'), default=1, help='tiles per forward on the device (default 1)')
    p.add_argument('--device', type=_device, default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='cpu, cuda or cuda:N (default: cuda if available)')
    p.add_argument('--amp', choices=sorted(_AMP), help='autocast dtype for the model')
    p.add_argument('--scale', type=_int_at_least(1, '--scale'), help='super-resolution factor (default: the model\'s upscale, else 1)')
    p.add_argument('--threads', type=_int_at_least(1, '--threads'), help='torch CPU threads')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    return p


def _check_outputs(files: list[Path], inputs: str, out_dir: Path) -> None:
    """Refuse, before the model runs, any output that would replace an input (any spelling, symlinks too)."""
    from fke_basicsr.io_utils import UserError, check_writable_folder, same_file

    check_writable_folder(out_dir, 'output')
    if Path(inputs).is_dir() and out_dir.exists() and same_file(out_dir, inputs):
        raise UserError('output: must differ from the input folder (outputs keep the input file names)')
    for path in files:
        target = out_dir / path.name
        if target.exists() and same_file(target, path):
            raise UserError(f'output: writing {target} would overwrite the input {path}; choose another -o folder '
                            '(outputs keep the input file names).')


def _clipping_note(path: Path, img: np.ndarray) -> str | None:
    """A float image with values outside [0, 1]: what infer does with them (clips), said once per file."""
    if img.dtype.kind != 'f' or img.size == 0:
        return None
    lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
    if lo >= 0.0 and hi <= 1.0:
        return None
    return (f'note: {path}: float pixel values span [{lo:.4g}, {hi:.4g}]; the model takes [0, 1], so they were '
            'clipped to [0, 1] and the output is in [0, 1] (scale the image to [0, 1] first to keep its range).')


def main(argv: Sequence[str] | None = None) -> int:
    from fke_basicsr.io_utils import keyboard_interrupt_exit
    with keyboard_interrupt_exit('infer'):
        return _main(argv)


def _main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import fke_basicsr  # noqa: F401  (shims + registration)
    from fke_basicsr.checkpoints import CheckpointMismatchError
    from fke_basicsr.build import parse_sets
    from fke_basicsr.io_utils import UserError, remove_stale_tmp

    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.output)
    try:
        if not Path(args.input).exists():
            raise UserError(f'input: {args.input} does not exist; give an image file or a folder of images.')
        files = list_images(args.input)
        if not files:
            raise ValueError(f'input: no images with extensions {", ".join(IMAGE_EXTENSIONS)} in {args.input}')
        _check_outputs(files, args.input, out_dir)
        model, info = load_model(args.opt, args.arch, args.variant, args.weights, args.param_key,
                                 parse_sets(args.sets), args.sha256)
        scale = args.scale or getattr(model, 'upscale', None) or info['scale'] or 1
        restorer = Restorer(model, args.device, args.tile, args.tile_overlap, scale, args.amp, args.tile_batch)
    except CheckpointMismatchError as err:
        print(f'error: weights do not fit the network:\n{err}', file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, FileNotFoundError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp([out_dir])  # partial files of a killed earlier run
    print(f'{len(files)} image(s) -> {out_dir} | device {restorer.device}, threads {torch.get_num_threads()}, '
          f'tile {restorer.tile or "whole image"}/{restorer.overlap if restorer.tile else 0}, '
          f'pad multiple {restorer.multiple}, scale {restorer.scale}, amp {args.amp or "off"}')

    from tqdm import tqdm

    failed, seconds = 0, 0.0
    bar = tqdm(files, unit='img', disable=args.quiet, file=sys.stderr)
    restorer.log = bar.write
    for path in bar:
        t0 = time.perf_counter()
        try:
            img = read_image(path)
            note = _clipping_note(path, img)
            if note:
                bar.write(note, file=sys.stderr)
            result = restorer.restore_image(img)
            write_image_atomic(out_dir / path.name, result)
        except (ImageReadError, ValueError, OSError) as err:
            failed += 1
            bar.write(f'error: {path}: {err}', file=sys.stderr)
            continue
        seconds += time.perf_counter() - t0
    done = len(files) - failed
    per = f'{seconds / done:.2f} s/image' if done else 'n/a s/image'
    print(f'done: {done} written, {failed} failed, {seconds:.2f} s, {per} '
          f'(device {restorer.device}, {torch.get_num_threads()} threads)')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
