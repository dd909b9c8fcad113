"""How an image is run through a network at test time: pad to a multiple, whole image or overlapping tiles.

A network computes; a :class:`TestTimeProtocol` runs it (docs/evaluation.md). One object holds what the
evaluation protocols of the paper differ in, read from the ``val:`` section of an options file::

    val:
      tile: {size: 512, overlap: 128, batch: 1}   # absent or null: the whole image at once
      size_multiple: 8                           # default: the network's ``size_multiple``
      pad_mode: reflect                          # constant | reflect | replicate | symmetric
      pad_to: [776, 680]                         # optional: first pad every image to this fixed size

Running an image: pad its bottom/right (to ``pad_to``, then to a multiple of ``size_multiple``), run the network
on the whole padded image or on overlapping tiles blended seam-free (:class:`fke_basicsr.ops.geometry.TileGrid`),
take the prediction (:func:`fke_basicsr.archs.outputs.prediction`) and crop it back to the input size times the
output scale.

Where the tiles are cut is the network's choice. A network may define three hooks:
``tile_inputs(x) -> list[Tensor]`` (the whole-image stage, e.g. DeepRFTv2's image pyramid or ATD's
``conv_first`` features), ``tile_input_scales`` (the resolution of each of those maps relative to the input) and
``forward_tiles(tiles) -> output`` (the rest of the network on tiles of them), plus optionally
``from_tiles(blended) -> Tensor``; the protocol then cuts every map into the tiles of one grid, at its scale
(the authors' scheme: paper section 4.1). A network without hooks gets tiles of the padded input image.
Only ``batch`` tiles (times the image batch) are on the network's device at once; the image and the blended
output stay where the input is.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fke_basicsr.archs.outputs import prediction
from fke_basicsr.ops.geometry import PAD_MODES, TileGrid, crop_to, pad_to_multiple, tiled_apply, to_pair
from fke_basicsr.registry import did_you_mean

__all__ = ['TestTimeProtocol', 'TILE_KEYS', 'check_network_options']

TILE_KEYS = ('size', 'overlap', 'batch')

# Test-time options that used to live in network_g, per arch: (old keys, where they went).
_LEGACY_NETWORK_KEYS = {
    'DeepRFTv2': {
        'sub_image': 'val.tile (present = tiled; absent or null = whole image)',
        'sub_image_size': 'val.tile.size', 'overlap_size': 'val.tile.overlap',
        'pad_input': 'val.size_multiple / val.pad_mode (the protocol always pads)', 'pad_mode': 'val.pad_mode',
        'return_all': 'nothing: the network always returns DeblurOutputs (fke_basicsr.archs.outputs)',
        'out_channels': 'nothing: the output channels equal inp_channels',
        'fke_window_overlap': 'network_g.fke_window: {size: <window>, overlap: <overlap>}',
        'patch_size': 'network_g.scan_window (the EVSS2D scan window; same value)',
    },
    'ATD': {
        'test_mode': "val: 'tile' -> val.tile: {size: 64, overlap: 16}; 'pad' -> val.size_multiple: 16 and "
                     "val.pad_mode: symmetric; 'whole' -> val.size_multiple: 1",
        'tile_size': 'val.tile.size', 'tile_overlap': 'val.tile.overlap', 'tile_batch': 'val.tile.batch',
        'fke_window_overlap': 'network_g.fke_window: {size: <window>, overlap: <overlap>}',
        'patch_size': 'nothing: ATD-light embeds 1x1 patches, remove the key',
        'ape': 'nothing: ATD-light has no absolute position embedding, remove the key',
    },
}
_LEGACY_NETWORK_KEYS['DeepRFTv2Ablation'] = _LEGACY_NETWORK_KEYS['DeepRFTv2']


def check_network_options(net_opt: Mapping | None, section: str = 'network_g') -> None:
    """ValueError naming the new place of any test-time option still given to the network constructor."""
    if not isinstance(net_opt, Mapping):
        return
    legacy = _LEGACY_NETWORK_KEYS.get(str(net_opt.get('type')), {})
    found = [k for k in net_opt if k in legacy]
    if found:
        moves = '; '.join(f'{section}.{k} -> {legacy[k]}' for k in found)
        raise ValueError(f'{section}: {", ".join(found)} are no longer network options: test-time padding and '
                         f'tiling are options of the evaluation protocol, given under `val:` as '
                         f'`tile: {{size: ..., overlap: ..., batch: ...}}`, `size_multiple` and `pad_mode` '
                         f'(docs/evaluation.md), and a few network options were renamed. Move them: {moves}.')


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name}: expected an int >= {minimum}, got {value!r}')
    return value


@dataclass(frozen=True)
class TestTimeProtocol:
    """Pad to a multiple; run the whole image or overlapping, blended tiles; crop back (module docstring).

    Args:
        size_multiple: pad height and width up to multiples of it (1: no padding).
        pad_mode: 'constant' (zeros), 'reflect', 'replicate' or 'symmetric' (flipped copies, original ATD).
        tile: tile side (int or (h, w)) in input pixels, or None for the whole image.
        overlap: tile overlap in input pixels.
        batch: tiles per forward.
        scale: output size / input size (super-resolution factor).
        pad_to: optional fixed (h, w) every image is padded to first (with ``pad_mode``).
    """
    __test__ = False  # not a pytest class

    size_multiple: int = 1
    pad_mode: str = 'reflect'
    tile: int | tuple[int, int] | None = None
    overlap: int | tuple[int, int] = 0
    batch: int = 1
    scale: int = 1
    pad_to: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _int(self.size_multiple, 'size_multiple', 1)
        _int(self.batch, 'tile.batch', 1)
        _int(self.scale, 'scale', 1)
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f'pad_mode: expected one of {list(PAD_MODES)}, got {self.pad_mode!r}')
        if self.tile is not None:
            th, tw = to_pair(self.tile, 'tile.size')
            oh, ow = to_pair(self.overlap, 'tile.overlap', minimum=0)
            m = self.size_multiple
            if th % m or tw % m:
                raise ValueError(f'tile.size: {self.tile} must be a multiple of {m} (the size multiple), so every '
                                 f'tile is a valid network input')
            if oh >= th or ow >= tw:
                raise ValueError(f'tile.overlap: {self.overlap} must be smaller than tile.size {self.tile}')
        if self.pad_to is not None:
            object.__setattr__(self, 'pad_to', to_pair(self.pad_to, 'pad_to'))

    # ------------------------------------------------------------------------------------------- building
    @classmethod
    def from_options(cls, val_opt: Mapping | None, net: nn.Module | None = None, *, scale: int | None = None,
                     pad_mode: str = 'reflect', tile_key: str = 'val.tile') -> 'TestTimeProtocol':
        """The protocol of a ``val:`` section for ``net``: its ``size_multiple`` and ``upscale`` are the defaults.

        ``pad_mode`` is the caller's default when the section has none; ``scale`` overrides the network's.
        """
        val_opt = val_opt or {}
        bare = getattr(net, 'module', net)  # DDP / DataParallel
        multiple = val_opt.get('size_multiple')
        if multiple is None:
            multiple = int(getattr(bare, 'size_multiple', 1) or 1)
        tile = val_opt.get('tile')
        size, overlap, batch = None, 0, 1
        if tile is not None:
            if not isinstance(tile, Mapping) or 'size' not in tile:
                raise ValueError(f'{tile_key}: expected a mapping {{size: int, overlap: int, batch: int}}, '
                                 f'got {tile!r}')
            for key in tile:
                if key not in TILE_KEYS:
                    raise ValueError(f'{tile_key}.{key}: unknown option.{did_you_mean(key, TILE_KEYS)} Keys: '
                                     f'{", ".join(TILE_KEYS)}.')
            size = tile['size'] if not isinstance(tile['size'], list) else tuple(tile['size'])
            overlap = tile.get('overlap') or 0
            overlap = overlap if not isinstance(overlap, list) else tuple(overlap)
            batch = 1 if tile.get('batch') is None else tile['batch']
        if scale is None:
            scale = int(getattr(bare, 'upscale', 1) or 1)
        pad_to = val_opt.get('pad_to')
        return cls(size_multiple=multiple, pad_mode=val_opt.get('pad_mode') or pad_mode, tile=size,
                   overlap=overlap, batch=batch, scale=int(scale), pad_to=tuple(pad_to) if isinstance(
                       pad_to, list) else pad_to)

    def describe(self) -> str:
        """One line for logs and tables, e.g. 'tiles 512/128 (batch 1), pad to x8 (reflect)'."""
        run = 'whole image' if self.tile is None else f'tiles {self.tile}/{self.overlap} (batch {self.batch})'
        pad = f', pad to x{self.size_multiple} ({self.pad_mode})' if self.size_multiple > 1 else ''
        fixed = f', pad to {self.pad_to[0]}x{self.pad_to[1]}' if self.pad_to else ''
        return run + fixed + pad

    # ------------------------------------------------------------------------------------------- running
    def pad(self, x: Tensor) -> Tensor:
        """``x`` padded bottom/right to ``pad_to`` (if set), then to multiples of ``size_multiple``."""
        if self.pad_to is not None:
            th, tw = self.pad_to
            h, w = x.shape[-2:]
            if self.pad_mode == 'constant':
                x = F.pad(x, (0, max(tw - w, 0), 0, max(th - h, 0)))
            else:
                x = pad_to_multiple(x, (max(th, h), max(tw, w)), self.pad_mode)[0] if (h < th or w < tw) else x
                x = x[..., :max(th, h), :max(tw, w)]
        return pad_to_multiple(x, self.size_multiple, self.pad_mode)[0]

    def __call__(self, net: nn.Module, x: Tensor, device: torch.device | str | None = None) -> Tensor:
        """The prediction of ``net`` for images ``x`` (B, C, H, W): (B, C', H·scale, W·scale), on ``x``'s device.

        ``device``: where the network runs (default: ``x``'s); only ``batch`` tiles are moved there at once.
        """
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f'x: expected a (B, C, H, W) tensor, got '
                             f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
        h, w = x.shape[-2:]
        xp = self.pad(x)
        device = x.device if device is None else torch.device(device)
        if self.tile is None:
            y = prediction(net(xp.to(device))).to(x.device)
        elif hasattr(net, 'forward_tiles'):
            y = self._run_tiles(net, xp, device)
        else:
            y = tiled_apply(lambda t: prediction(net(t)), xp, self.tile, self.overlap, scale=self.scale,
                            tile_batch=self.batch, device=device)
        return crop_to(y, (h * self.scale, w * self.scale))

    def _run_tiles(self, net: nn.Module, x: Tensor, device: torch.device) -> Tensor:
        """Tiles cut from the network's whole-image maps (``tile_inputs``), run by ``forward_tiles``, blended."""
        maps = [m.to(x.device) for m in net.tile_inputs(x.to(device))]
        scales: Sequence[Fraction] = [Fraction(s) for s in net.tile_input_scales]
        grid = TileGrid(tuple(maps[0].shape[-2:]), self.tile, self.overlap)
        boxes = [grid.boxes(s) for s in scales]
        out_boxes = grid.boxes(self.scale)
        b = x.shape[0]
        canvas = out_dtype = None
        for first in range(0, len(grid), self.batch):
            idx = range(first, min(first + self.batch, len(grid)))
            tiles = [torch.cat([m[:, :, r:r + th, c:c + tw] for r, c, th, tw in (bx[i] for i in idx)], 0).to(device)
                     for m, bx in zip(maps, boxes)]
            y = prediction(net.forward_tiles(tiles)).to(x.device)
            if canvas is None:
                out_dtype = y.dtype
                (oh, ow), *_ = grid._geometry(self.scale)
                canvas = y.new_zeros((b, y.shape[1], oh, ow), dtype=torch.promote_types(y.dtype, torch.float32))
            for k, i in enumerate(idx):
                r, c, th, tw = out_boxes[i]
                canvas[:, :, r:r + th, c:c + tw] += y[k * b:(k + 1) * b] * grid.weight(i, self.scale, canvas.dtype,
                                                                                          x.device)
        y = canvas.to(out_dtype)
        return net.from_tiles(y) if hasattr(net, 'from_tiles') else y
