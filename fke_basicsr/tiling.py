"""Padding to a multiple and overlapping-tile inference with seam-free blending (deeprftv2.md §2.1, atd_fke.md §4.5).

Tiling follows the authors' scheme along each axis: the tile is ``k = min(tile, size)``, starts are
``0, stride, 2*stride, ...`` with ``stride = k - overlap``, and the first start whose tile would reach or pass the
border is snapped to ``size - k`` and ends the sequence.

Blending is a weighted overlap-add. Each tile gets linear ramps (``linspace(0, 1, n)`` rising on its leading edge,
``linspace(1, 0, n)`` falling on its trailing edge) over its true overlap ``n`` with its neighbour: ``overlap`` for
regular neighbours, ``e = n_tiles*stride + 2*overlap - size`` for the snapped last tile, exactly the authors' ramps.
Two ramps of one tile that meet are multiplied. The authors stop there; we then divide by the sum of the weights
of all tiles covering each position (falling back to equal shares where that sum is 0), so the weights are an
exact partition of unity for every size. Where the authors' weights already sum to one (2-/3-tile cases with
no position covered by three tiles) the division is by one and both agree. Rows and columns are independent and
their weights multiply.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['pad_to_multiple', 'crop_to', 'tile_starts', 'blend_weights', 'TileGrid', 'tiled_apply']

_PAD_MODES = ('constant', 'reflect', 'replicate')


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, int) for a in v):
        return int(v[0]), int(v[1])
    raise ValueError(f'{name}: expected an int or a pair of ints, got {v!r}')


def pad_to_multiple(x: Tensor, multiple: int | tuple[int, int],
                    mode: str = 'constant') -> tuple[Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``(..., H, W)`` to multiples of ``multiple``; returns (padded, original (H, W))."""
    mh, mw = _pair(multiple, 'multiple')
    if mh < 1 or mw < 1:
        raise ValueError(f'multiple: expected positive values, got {(mh, mw)}')
    if mode not in _PAD_MODES:
        raise ValueError(f'mode: expected one of {_PAD_MODES}, got {mode!r}')
    if x.dim() < 2:
        raise ValueError(f'x: expected a tensor of shape (..., H, W), got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    ph, pw = -h % mh, -w % mw
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == 'constant':
        return F.pad(x, (0, pw, 0, ph)), (h, w)
    if mode == 'reflect' and ((ph and h < 2) or (pw and w < 2)):
        raise ValueError(f"mode: 'reflect' needs at least 2 pixels along a padded axis, got (H, W) = {(h, w)}")
    y = x.reshape(-1, 1, h, w)   # F.pad's reflect/replicate want (N, C, H, W)
    # reflect pads must be smaller than the side: pad repeatedly, each step mirroring the grown image
    while ph or pw:
        sh = min(ph, y.shape[-2] - 1) if mode == 'reflect' else ph
        sw = min(pw, y.shape[-1] - 1) if mode == 'reflect' else pw
        y = F.pad(y, (0, sw, 0, sh), mode=mode)
        ph, pw = ph - sh, pw - sw
    return y.reshape(*x.shape[:-2], *y.shape[-2:]), (h, w)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Keep the top-left ``size = (H, W)`` of ``(..., H', W')``: the inverse of :func:`pad_to_multiple`."""
    h, w = _pair(tuple(size), 'size')
    if x.dim() < 2 or h < 1 or w < 1 or h > x.shape[-2] or w > x.shape[-1]:
        raise ValueError(f'size: expected 1 <= (H, W) <= {tuple(x.shape[-2:])}, got {(h, w)}')
    return x[..., :h, :w]


def _check_axis(size: int, tile: int, overlap: int) -> None:
    if size < 1:
        raise ValueError(f'size: expected a positive int, got {size}')
    if tile < 1:
        raise ValueError(f'tile: expected a positive int, got {tile}')
    if not 0 <= overlap < tile:
        raise ValueError(f'overlap: expected 0 <= overlap < tile = {tile}, got {overlap}')


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis, the authors' scheme (atd_fke.md §4.5): stride k - overlap, last one snapped."""
    _check_axis(size, tile, overlap)
    k = min(tile, size)
    stride = tile - overlap
    starts, s = [], 0
    while s + k < size:
        starts.append(s)
        s += stride
    starts.append(size - k)
    return starts


def _axis_weights(starts: Sequence[int], k: int, size: int) -> list[Tensor]:
    """Ramps over each true overlap between consecutive tiles, normalised to sum to 1 at every position (float64)."""
    n = len(starts)
    raw = []
    for i, s in enumerate(starts):
        w = torch.ones(k, dtype=torch.float64)
        if i > 0:
            ov = starts[i - 1] + k - s
            if ov > 0:
                w[:ov] *= torch.linspace(0, 1, ov, dtype=torch.float64)
        if i < n - 1:
            ov = s + k - starts[i + 1]
            if ov > 0:
                w[k - ov:] *= torch.linspace(1, 0, ov, dtype=torch.float64)
        raw.append(w)
    total = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.float64)
    for s, w in zip(starts, raw):
        total[s:s + k] += w
        count[s:s + k] += 1
    if bool((count == 0).any()):
        raise ValueError(f'starts: tiles of length {k} at {list(starts)} do not cover 0..{size - 1}')
    return [torch.where(total[s:s + k] > 0, w / total[s:s + k].clamp_min(1e-300), 1 / count[s:s + k])
            for s, w in zip(starts, raw)]


def blend_weights(size: int, tile: int, overlap: int) -> list[Tensor]:
    """1-D float64 blending weights of each tile of :func:`tile_starts`; they sum to exactly 1 at every position."""
    starts = tile_starts(size, tile, overlap)
    return _axis_weights(starts, min(tile, size), size)


def _scaled(v: int, scale: Fraction, what: str) -> int:
    s = v * scale
    if s.denominator != 1:
        raise ValueError(f'scale: {float(scale)} x {what} {v} is not an integer; choose a tiling whose sizes and '
                         f'starts are multiples of {scale.denominator}')
    return int(s)


def _fraction(scale: float | int | Fraction) -> Fraction:
    if isinstance(scale, bool) or not isinstance(scale, (int, float, Fraction)) or scale <= 0:
        raise ValueError(f'scale: expected a positive number, got {scale!r}')
    return Fraction(scale).limit_denominator(1 << 16)


class TileGrid:
    """Overlapping tile grid of an (H, W) image with exact blending weights; works at any fixed scale of it."""

    def __init__(self, size: tuple[int, int], tile: int | tuple[int, int], overlap: int | tuple[int, int]) -> None:
        self.size = _pair(tuple(size), 'size')
        th, tw = _pair(tile, 'tile')
        oh, ow = _pair(overlap, 'overlap')
        self.rows = tile_starts(self.size[0], th, oh)
        self.cols = tile_starts(self.size[1], tw, ow)
        self.tile = (min(th, self.size[0]), min(tw, self.size[1]))
        self._cache: dict[Fraction, tuple] = {}

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def _geometry(self, scale: float | int | Fraction = 1) -> tuple:
        """(size, tile, row starts, col starts, row weights, col weights) at ``scale``."""
        s = _fraction(scale)
        if s not in self._cache:
            size = tuple(_scaled(v, s, 'image side') for v in self.size)
            tile = tuple(_scaled(v, s, 'tile') for v in self.tile)
            rows = [_scaled(v, s, 'tile start') for v in self.rows]
            cols = [_scaled(v, s, 'tile start') for v in self.cols]
            self._cache[s] = (size, tile, rows, cols,
                              _axis_weights(rows, tile[0], size[0]), _axis_weights(cols, tile[1], size[1]))
        return self._cache[s]

    def boxes(self, scale: float | int | Fraction = 1) -> list[tuple[int, int, int, int]]:
        """(top, left, height, width) of every tile, row-major, at ``scale``."""
        _, (th, tw), rows, cols, _, _ = self._geometry(scale)
        return [(r, c, th, tw) for r in rows for c in cols]

    def weight(self, index: int, scale: float | int | Fraction = 1, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
        """(h, w) blending weight of tile ``index`` (row-major) at ``scale``."""
        _, _, rows, cols, wr, wc = self._geometry(scale)
        i, j = divmod(index, len(cols))
        return torch.outer(wr[i], wc[j]).to(dtype=dtype, device=device)

    def _check_input(self, x: Tensor, scale) -> tuple:
        geo = self._geometry(scale)
        if x.dim() != 4 or tuple(x.shape[-2:]) != geo[0]:
            raise ValueError(f'x: expected (B, C, {geo[0][0]}, {geo[0][1]}) at scale {scale}, got {tuple(x.shape)}')
        return geo

    def split(self, x: Tensor, scale: float | int | Fraction = 1) -> Tensor:
        """(B, C, H*s, W*s) -> (N*B, C, th*s, tw*s) tiles, tile-major (index = tile * B + batch)."""
        self._check_input(x, scale)
        return torch.cat([x[:, :, r:r + h, c:c + w] for r, c, h, w in self.boxes(scale)], 0)

    def merge(self, tiles: Tensor, scale: float | int | Fraction = 1) -> Tensor:
        """(N*B, C, th*s, tw*s) tiles -> (B, C, H*s, W*s) weighted blend (exact partition of unity)."""
        (h, w), (th, tw), *_ = self._geometry(scale)
        n = len(self)
        if tiles.dim() != 4 or tiles.shape[0] % n or tuple(tiles.shape[-2:]) != (th, tw):
            raise ValueError(f'tiles: expected ({n}*B, C, {th}, {tw}) at scale {scale}, got {tuple(tiles.shape)}')
        b = tiles.shape[0] // n
        acc = torch.promote_types(tiles.dtype, torch.float32)
        out = tiles.new_zeros((b, tiles.shape[1], h, w), dtype=acc)
        for k, (r, c, bh, bw) in enumerate(self.boxes(scale)):
            out[:, :, r:r + bh, c:c + bw] += tiles[k * b:(k + 1) * b] * self.weight(k, scale, acc, tiles.device)
        return out.to(tiles.dtype)


def tiled_apply(fn: Callable[[Tensor], Tensor], x: Tensor, tile: int | tuple[int, int],
                overlap: int | tuple[int, int], scale: float = 1, tile_batch: int = 1,
                device: torch.device | str | None = None) -> Tensor:
    """``fn`` over overlapping tiles of ``x`` (B, C, H, W), blended into one (B, C', H*scale, W*scale) output.

    Memory-bounded: only ``tile_batch`` tiles (times the batch) are on ``device`` (default: ``x``'s) at a time; the
    output canvas is accumulated on ``x``'s device in at least float32 and returned in ``fn``'s output dtype.
    """
    if x.dim() != 4:
        raise ValueError(f'x: expected (B, C, H, W), got shape {tuple(x.shape)}')
    if isinstance(tile_batch, bool) or not isinstance(tile_batch, int) or tile_batch < 1:
        raise ValueError(f'tile_batch: expected a positive int, got {tile_batch!r}')
    grid = TileGrid(tuple(x.shape[-2:]), tile, overlap)
    out_size, out_tile, *_ = grid._geometry(scale)
    device = x.device if device is None else torch.device(device)
    boxes, out_boxes = grid.boxes(), grid.boxes(scale)
    b = x.shape[0]
    canvas, out_dtype = None, None
    for first in range(0, len(boxes), tile_batch):
        idx = range(first, min(first + tile_batch, len(boxes)))
        batch = torch.cat([x[:, :, r:r + h, c:c + w] for r, c, h, w in (boxes[i] for i in idx)], 0)
        y = fn(batch.to(device))
        if y.dim() != 4 or y.shape[0] != batch.shape[0] or tuple(y.shape[-2:]) != out_tile:
            raise ValueError(f'fn: expected an output of shape ({batch.shape[0]}, C, {out_tile[0]}, {out_tile[1]}) '
                             f'for tiles of shape {tuple(batch.shape)} at scale {scale}, got {tuple(y.shape)}')
        y = y.to(x.device)
        if canvas is None:
            out_dtype = y.dtype
            acc = torch.promote_types(y.dtype, torch.float32)
            canvas = y.new_zeros((b, y.shape[1], *out_size), dtype=acc)
        for k, i in enumerate(idx):
            r, c, h, w = out_boxes[i]
            canvas[:, :, r:r + h, c:c + w] += y[k * b:(k + 1) * b] * grid.weight(i, scale, canvas.dtype, x.device)
    return canvas.to(out_dtype)
