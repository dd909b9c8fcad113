"""Windows and overlapping tiles of an image or feature map: one start rule, ``WindowGrid``, ``TileGrid``.

One rule places windows and tiles along an axis (:func:`window_starts`): windows of side ``k = min(window, size)``
start at ``0, stride, 2*stride, ...`` with ``stride = window - overlap``, and the first start whose window would
reach or pass the border is snapped to ``size - k`` and ends the sequence. With ``overlap = 0`` this is the
non-overlapping partition with one border window snapped to the edge (the FKE's training windows, ATD's
attention windows on maps that are not a multiple of the window); with an overlap it is the authors'
test-time tiling (paper section 4.1; docs/evaluation.md).

* :class:`WindowGrid` — non-overlapping windows; on merging, each pixel is read from the window that owns it
  (the snapped border window owns only the remainder it alone covers). Works on (B, C, H, W) maps
  (:meth:`WindowGrid.split` / :meth:`WindowGrid.merge`) and on ATD's (B, H, W, C) token layout
  (:meth:`WindowGrid.tokens` / :meth:`WindowGrid.untokens`).
* :class:`TileGrid` — overlapping tiles blended by weighted overlap-add. Each tile gets linear ramps
  (``linspace(0, 1, n)`` rising on its leading edge, ``linspace(1, 0, n)`` falling on its trailing edge) over its
  true overlap ``n`` with its neighbour, exactly the authors' ramps; two ramps of one tile that meet are
  multiplied. We then divide by the sum of the weights of all tiles covering each position (equal shares where
  that sum is 0), so the weights are an exact partition of unity for every size; where the authors' weights
  already sum to one, both agree. Rows and columns are independent and their weights multiply.
* :func:`pad_to_multiple` / :func:`crop_to` — bottom/right padding and its inverse; :func:`tiled_apply` runs a
  function over the tiles of an image with a bounded number of tiles on the device.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['to_pair', 'window_option', 'window_starts', 'WindowGrid', 'TileGrid', 'pad_to_multiple', 'pad_symmetric_to', 'crop_to',
           'blend_weights', 'tiled_apply', 'PAD_MODES', 'tile_starts']

PAD_MODES = ('constant', 'reflect', 'replicate', 'symmetric')


def to_pair(value: int | Sequence[int], name: str, minimum: int | None = 1) -> tuple[int, int]:
    """An int or an (h, w) pair of ints as a pair, each ``>= minimum`` (None: any int); ValueError naming ``name``.

    The one int-or-pair validator of the package (window sizes, tile sizes, overlaps, training sizes).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        bound = '' if minimum is None else f' >= {minimum}'
        raise ValueError(f'{name}: expected an int{bound} or a pair [h, w] of them, got {value!r}')
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f'{name}: expected an int >= {minimum} or a pair [h, w] of them, got {value!r}')
    return pair



def window_option(value, name: str) -> tuple[tuple[int, int] | None, tuple[int, int]]:
    """A window option — None, a size (int or [h, w]) or ``{size: ..., overlap: ...}`` — as (size, overlap).

    The form of ``fke_window`` (networks) and of ``val.tile`` (test-time protocol); a missing overlap is 0.
    """
    if value is None:
        return None, (0, 0)
    if isinstance(value, dict):
        unknown = sorted(set(value) - {'size', 'overlap'})
        if unknown or 'size' not in value:
            raise ValueError(f'{name}: expected {{size: <int or [h, w]>, overlap: <int or [h, w]>}}, got {value!r}')
        size = to_pair(value['size'], f'{name}.size')
        overlap = to_pair(value.get('overlap') or 0, f'{name}.overlap', minimum=0)
    else:
        size, overlap = to_pair(value, name), (0, 0)
    if overlap[0] >= size[0] or overlap[1] >= size[1]:
        raise ValueError(f'{name}: overlap {list(overlap)} must be smaller than the size {list(size)}')
    return size, overlap


def window_starts(size: int, window: int, overlap: int = 0) -> list[int]:
    """Starts of the windows (or tiles) along one axis: stride ``window - overlap``, the last one snapped.

    ``size`` >= 1, ``window`` >= 1, ``0 <= overlap < window``; a window longer than the axis is clamped to it.
    """
    _check_axis(size, window, overlap)
    k = min(window, size)
    stride = window - overlap
    starts, s = [], 0
    while s + k < size:
        starts.append(s)
        s += stride
    starts.append(size - k)
    return starts


def _owned(starts: Sequence[int], k: int, size: int) -> list[tuple[int, int]]:
    """Per non-overlapping window, the [lo, hi) range of the axis it owns (the snapped last one: the remainder)."""
    owned = [(s, s + k) for s in starts]
    if len(starts) > 1 and starts[-1] < starts[-2] + k:
        owned[-1] = (starts[-2] + k, size)
    return owned


class WindowGrid:
    """Non-overlapping windows of an H×W map (border windows snapped to the edge); windows clamped to the map."""

    def __init__(self, height: int, width: int, window: int | Sequence[int]):
        wh, ww = to_pair(window, 'window')
        self.height, self.width = int(height), int(width)
        self.window = (min(wh, self.height), min(ww, self.width))
        self.rows = window_starts(self.height, self.window[0])
        self.cols = window_starts(self.width, self.window[1])
        self.row_owned = _owned(self.rows, self.window[0], self.height)
        self.col_owned = _owned(self.cols, self.window[1], self.width)

    @property
    def num_windows(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def regular(self) -> bool:
        """True when the windows tile the map exactly (no snapped border window)."""
        return self.height % self.window[0] == 0 and self.width % self.window[1] == 0

    def split(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (num_windows·B, C, wh, ww), window-major (window k holds rows k·B … k·B+B−1)."""
        if tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"x must be (…, {self.height}, {self.width}), got {tuple(x.shape)}")
        wh, ww = self.window
        return torch.cat([x[..., r:r + wh, c:c + ww] for r in self.rows for c in self.cols], dim=0)

    def merge(self, windows: Tensor) -> Tensor:
        """Inverse of :meth:`split`: each pixel is taken from the window that owns it (no blending)."""
        n = self.num_windows
        if windows.shape[0] % n:
            raise ValueError(f"windows: batch {windows.shape[0]} is not a multiple of the {n} windows")
        parts = windows.chunk(n, dim=0)
        row_strips = []
        for i, (r, (rlo, rhi)) in enumerate(zip(self.rows, self.row_owned)):
            pieces = []
            for j, (c, (clo, chi)) in enumerate(zip(self.cols, self.col_owned)):
                pieces.append(parts[i * len(self.cols) + j][..., rlo - r:rhi - r, clo - c:chi - c])
            row_strips.append(torch.cat(pieces, dim=-1))
        return torch.cat(row_strips, dim=-2)

    def tokens(self, x: Tensor) -> Tensor:
        """(B, H, W, C) → (B, num_windows, wh·ww, C): windows in raster order, pixels raster order inside."""
        b, h, w, c = x.shape
        if (h, w) != (self.height, self.width):
            raise ValueError(f'x must be (B, {self.height}, {self.width}, C), got {tuple(x.shape)}')
        wh, ww = self.window
        if self.regular:  # a pure reshape (the training case)
            win = x.reshape(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
            return win.reshape(b, -1, wh * ww, c)
        rows = torch.tensor(self.rows, device=x.device)[:, None] + torch.arange(wh, device=x.device)
        cols = torch.tensor(self.cols, device=x.device)[:, None] + torch.arange(ww, device=x.device)
        win = x[:, rows[:, None, :, None], cols[None, :, None, :], :]  # B×nh×nw×wh×ww×C
        return win.reshape(b, rows.shape[0] * cols.shape[0], wh * ww, c)

    def untokens(self, windows: Tensor) -> Tensor:
        """Inverse of :meth:`tokens`: (B, num_windows, wh·ww, C) → (B, H, W, C), each pixel from its owner."""
        b, _, _, c = windows.shape
        wh, ww = self.window
        nh, nw = len(self.rows), len(self.cols)
        win = windows.reshape(b, nh, nw, wh, ww, c)
        if self.regular:
            return win.permute(0, 1, 3, 2, 4, 5).reshape(b, self.height, self.width, c)
        ri, ro = self._owner_index(self.rows, self.row_owned, self.height, windows.device)
        ci, co = self._owner_index(self.cols, self.col_owned, self.width, windows.device)
        return win[:, ri[:, None], ci[None, :], ro[:, None], co[None, :], :]

    @staticmethod
    def _owner_index(starts, owned, size: int, device) -> tuple[Tensor, Tensor]:
        """For each position: the index of the window owning it and its offset inside that window."""
        idx = torch.empty(size, dtype=torch.long)
        off = torch.empty(size, dtype=torch.long)
        for i, (s, (lo, hi)) in enumerate(zip(starts, owned)):
            idx[lo:hi] = i
            off[lo:hi] = torch.arange(lo - s, hi - s)
        return idx.to(device), off.to(device)


def pad_to_multiple(x: Tensor, multiple: int | tuple[int, int],
                    mode: str = 'constant') -> tuple[Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``(..., H, W)`` to multiples of ``multiple``; returns (padded, original (H, W))."""
    mh, mw = to_pair(multiple, 'multiple')
    if mode not in PAD_MODES:
        raise ValueError(f'mode: expected one of {PAD_MODES}, got {mode!r}')
    if x.dim() < 2:
        raise ValueError(f'x: expected a tensor of shape (..., H, W), got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    ph, pw = -h % mh, -w % mw
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == 'constant':
        return F.pad(x, (0, pw, 0, ph)), (h, w)
    if mode == 'symmetric':
        return pad_symmetric_to(x, h + ph, w + pw), (h, w)
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


def pad_symmetric_to(x: Tensor, height: int, width: int) -> Tensor:
    """Pad bottom/right to at least ``height`` × ``width`` by appending flipped copies (edge row/column repeated).

    The original ATD's test-time padding; an image shorter than its padding is flipped again.
    """
    height, width = max(height, x.shape[-2]), max(width, x.shape[-1])
    while x.shape[-2] < height:
        x = torch.cat([x, torch.flip(x, [-2])], -2)
    while x.shape[-1] < width:
        x = torch.cat([x, torch.flip(x, [-1])], -1)
    return x[..., :height, :width]


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Keep the top-left ``size = (H, W)`` of ``(..., H', W')``: the inverse of :func:`pad_to_multiple`."""
    h, w = to_pair(tuple(size), 'size', minimum=None)
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
    """Tile starts along one axis: :func:`window_starts` with an overlap."""
    return window_starts(size, tile, overlap)


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
        self.size = to_pair(tuple(size), 'size', minimum=None)
        th, tw = to_pair(tile, 'tile', minimum=None)
        oh, ow = to_pair(overlap, 'overlap', minimum=None)
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
