"""Fourier Kernel Estimator (FKE): a learned, input-adaptive per-channel global filter predicted in the Fourier
domain (paper §3.1; docs/architecture.md, Fourier Kernel Estimator).

Usable on its own on any C-channel feature map::

    fke0 = FourierKernelEstimator(in_channels=48)                       # first column
    fke1 = FourierKernelEstimator(in_channels=48, first_column=False)   # takes fke0's state
    out0 = fke0(feat0); out1 = fke1(feat1, state=out0.state)

DeepRFTv2 uses ``image_head=True`` (3×3 conv to a residual image added to the blurry input of that scale);
ATD uses ``image_head=False, pad_to_even=True``. Our attribute names are our own; ``FKE_OFFICIAL_RENAMES``
maps them onto the authors' (``feature_extract.intro_inp.0`` …) for ``fke_basicsr.checkpoints``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fke_basicsr.archs.blocks import LayerNorm2d, build_block
from fke_basicsr.ops.geometry import TileGrid, WindowGrid, to_pair
from fke_basicsr.ops.fft import irfft2, rfft2
from fke_basicsr.ops.reversible import CarriedRef, reversible_column

__all__ = ['FKEOutput', 'SpectralLevel', 'SpectralColumn', 'OTFHead', 'FourierKernelEstimator',
           'fke_official_renames', 'FKE_OFFICIAL_RENAMES']


class FKEOutput(NamedTuple):
    """What an FKE returns: the fused feature, the column state for the next FKE, the optional image."""
    feature: Tensor
    state: tuple[Tensor, ...]
    image: Tensor | None


class SpectralLevel(nn.Module):
    """One level of the FKE column: optional cross-column fusion (1×1 conv on [current, previous-column
    level j+1]), then one residual block (FKE step 3; their ``Fusion_Encoder_nodownup`` + ``blocks.0``)."""

    def __init__(self, width: int, block: str, fuse_upper: bool):
        super().__init__()
        self.fusion = nn.Conv2d(2 * width, width, 1, bias=True) if fuse_upper else None
        self.block = build_block(block, width, 0)

    def forward(self, x: Tensor, upper: Tensor | None = None) -> Tensor:
        if self.fusion is not None:
            if not isinstance(upper, Tensor):
                raise ValueError('upper: this level fuses the previous column\'s next-level state; got '
                                 f'{type(upper).__name__}')
            x = self.fusion(torch.cat([x, upper], dim=1))
        return self.block(x)


class SpectralColumn(nn.Module):
    """The FKE's "reversible sub-ResNet": ``levels`` blocks at spectral resolution (paper §3.3.2, Eq. 16)::

        r_j = α_j·p_j + Block_j(F_j(r_{j−1}, p_{j+1})),   r_{−1} = x0, F_j = identity in the first column
        and for the last level, else a 1×1 conv (2w→w, bias) on the concatenation.
    """

    def __init__(self, width: int, levels: int, first_column: bool, block: str = 'EVSS', save_memory: bool = False):
        super().__init__()
        self.first_column = first_column
        self.save_memory = save_memory
        self.alphas = nn.ParameterList([nn.Parameter(torch.full((1, width, 1, 1), 0.5)) for _ in range(levels)])
        self.levels = nn.ModuleList([SpectralLevel(width, block, fuse_upper=not first_column and j < levels - 1)
                                     for j in range(levels)])

    def forward(self, x0: Tensor, state: Sequence[Tensor] | None = None) -> list[Tensor]:
        n = len(self.levels)
        if self.first_column:
            if state is not None:
                raise ValueError('state: a first-column FKE takes no previous state (build it with '
                                 'first_column=False to chain it after another FKE)')
            carried, extras = [None] * n, ()
        else:
            if state is None:
                raise ValueError('state: an FKE built with first_column=False needs the previous FKE\'s state '
                                 '(FKEOutput.state)')
            if len(state) != n or not all(isinstance(s, Tensor) for s in state):
                raise ValueError(f'state: expected {n} tensors (one per column level), got '
                                 f'{[type(s).__name__ for s in state]}')
            for j, s in enumerate(state):
                if s.shape != x0.shape:
                    raise ValueError(f'state[{j}]: shape {tuple(s.shape)} must equal the spectral feature shape '
                                     f'{tuple(x0.shape)} (same input size, batch, tiling and width as the '
                                     f'previous FKE)')
            carried = list(state)
            extras = [[CarriedRef(j + 1)] if lvl.fusion is not None else [] for j, lvl in enumerate(self.levels)]
        return reversible_column(list(self.levels), list(self.alphas), x0, carried, extras,
                                 save_memory=self.save_memory)


class OTFHead(nn.Module):
    """LayerNorm2d + 1×1 conv (w→2w, bias): first half real, second half imaginary (FKE step 4)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = LayerNorm2d(width)
        self.proj = nn.Conv2d(width, 2 * width, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        real, imag = self.proj(self.norm(x)).chunk(2, dim=1)
        return torch.complex(real.float(), imag.float())


class FourierKernelEstimator(nn.Module):
    """Fourier Kernel Estimator of DeepRFTv2 (paper §3.1; docs/architecture.md, Fourier Kernel Estimator).

    Args:
        in_channels: channels of the input feature (and of the output feature).
        width: internal width w (spectral features, column, OTF has w complex channels).
        levels: blocks in the spectral column (4 in both papers' configurations).
        first_column: False → 1×1 fusions for levels 0..levels−2 and α-scaled skips from the previous state.
        block: block kind of the column (``build_block`` names; the papers use 'EVSS').
        image_head: DeepRFTv2's 3×3 conv (in_channels→image_channels) whose output is added to ``blur``.
        pad_to_even: reflect-pad bottom/right to even H, W before the FFTs and crop after (ATD); without it
            the width must be even (DeepRFTv2's irfft2 has no size argument).
        window, window_overlap: FKE tiling when the map exceeds ``window`` (DPDD, ATD): training (or overlap 0)
            → non-overlapping windows with border windows snapped to the edge; eval → overlapping tiles merged
            with the blended, seam-free :class:`fke_basicsr.ops.geometry.TileGrid`. The state is per tile.
        save_memory: run the column through the reversible (activation-free) autograd function.
    """

    def __init__(self, in_channels: int = 48, width: int = 48, levels: int = 4, first_column: bool = True,
                 block: str = 'EVSS', image_head: bool = False, image_channels: int = 3, pad_to_even: bool = False,
                 window: int | Sequence[int] | None = None, window_overlap: int | Sequence[int] = 0,
                 save_memory: bool = False):
        super().__init__()
        for name, v in (('in_channels', in_channels), ('width', width), ('levels', levels),
                        ('image_channels', image_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f'{name} must be a positive int, got {v!r}')
        self.in_channels, self.width, self.first_column = in_channels, width, bool(first_column)
        self.pad_to_even = bool(pad_to_even)
        self.window = None if window is None else to_pair(window, 'window')
        overlap = (0, 0) if window_overlap in (0, None) else to_pair(window_overlap, 'window_overlap')
        if self.window is not None and (overlap[0] >= self.window[0] or overlap[1] >= self.window[1]):
            raise ValueError(f'window_overlap {overlap} must be smaller than window {self.window}')
        self.window_overlap = overlap

        self.proj_kernel = nn.Conv2d(in_channels, width, 1, bias=False)     # the map whose spectrum drives K
        self.proj_feature = nn.Conv2d(in_channels, width, 1, bias=False)    # the map that gets filtered
        self.spectral_embed = nn.Conv2d(2 * width, width, 1, bias=False)    # [Re, Im] → real spectral feature
        self.column = SpectralColumn(width, levels, self.first_column, block, save_memory)
        self.otf_head = OTFHead(width)
        self.fuse = nn.Conv2d(width + in_channels, in_channels, 1, bias=False)
        self.image_head = nn.Conv2d(in_channels, image_channels, 3, padding=1, bias=True) if image_head else None

    @property
    def save_memory(self) -> bool:
        return self.column.save_memory

    @save_memory.setter
    def save_memory(self, value: bool) -> None:
        self.column.save_memory = bool(value)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, width={self.width}, first_column={self.first_column}, '
                f'pad_to_even={self.pad_to_even}, window={self.window}, window_overlap={self.window_overlap}')

    # ---------------------------------------------------------------------------------------------- core
    def filter_spectrum(self, kernel_map: Tensor, feature_map: Tensor,
                        state: Sequence[Tensor] | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """FKE steps 2–5 (docs/architecture.md) on a map or batch of tiles: K from rfft2(kernel_map), irfft2(Y ⊙ K)."""
        h, w = kernel_map.shape[-2:]
        if self.pad_to_even and (h % 2 or w % 2):
            pad = (0, w % 2, 0, h % 2)
            kernel_map, feature_map = F.pad(kernel_map, pad, mode='reflect'), F.pad(feature_map, pad, mode='reflect')
        spec_k = rfft2(kernel_map)
        spec_y = rfft2(feature_map)
        x0 = self.spectral_embed(torch.cat([spec_k.real, spec_k.imag], dim=1).to(kernel_map.dtype))
        states = self.column(x0, state)
        otf = self.otf_head(states[-1])
        # no size argument: width 2·(W_f − 1), as the authors (even widths; pad_to_even makes them even)
        filtered = irfft2(spec_y * otf, dtype=kernel_map.dtype)
        return filtered[..., :h, :w], tuple(states)

    def _tiler(self, h: int, w: int):
        """None (whole map), a WindowGrid (training / no overlap) or a blended TileGrid (evaluation)."""
        if self.window is None or (h <= self.window[0] and w <= self.window[1]):
            return None
        if self.training or self.window_overlap == (0, 0):
            return WindowGrid(h, w, self.window)
        return TileGrid((h, w), self.window, self.window_overlap)

    def forward(self, feat: Tensor, state: Sequence[Tensor] | None = None, blur: Tensor | None = None) -> FKEOutput:
        if not isinstance(feat, Tensor) or feat.dim() != 4 or feat.shape[1] != self.in_channels:
            raise ValueError(f'feat must be (B, {self.in_channels}, H, W), got '
                             f'{tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__}')
        h, w = feat.shape[-2:]
        if self.image_head is not None:
            if not isinstance(blur, Tensor) or blur.shape[0] != feat.shape[0] or blur.shape[-2:] != feat.shape[-2:] \
                    or blur.shape[1] != self.image_head.out_channels:
                raise ValueError(f'blur must be the (B, {self.image_head.out_channels}, {h}, {w}) image this FKE '
                                 f'refines (image_head=True), got '
                                 f'{tuple(blur.shape) if isinstance(blur, Tensor) else blur!r}')
        tiler = self._tiler(h, w)
        tile_w = w if tiler is None else min(w, self.window[1])
        if not self.pad_to_even and tile_w % 2:
            raise ValueError(f'feat: width {tile_w} (per tile) is odd; DeepRFTv2\'s FKE needs even widths '
                             f'(irfft2 without a size), build it with pad_to_even=True or pad the input')

        kernel_map, feature_map = self.proj_kernel(feat), self.proj_feature(feat)
        if tiler is None:
            filtered, new_state = self.filter_spectrum(kernel_map, feature_map, state)
        else:
            # tile both 1×1 projections together so every tile sees the same crop
            tiles = tiler.split(torch.cat([kernel_map, feature_map], dim=1))
            k_tiles, f_tiles = tiles.split([self.width, self.width], dim=1)
            filtered, new_state = self.filter_spectrum(k_tiles, f_tiles, state)
            filtered = tiler.merge(filtered)
        out = self.fuse(torch.cat([filtered, feat], dim=1))
        image = None if self.image_head is None else self.image_head(out) + blur
        return FKEOutput(out, new_state, image)


def fke_official_renames(levels: int = 4) -> list[tuple[str, str]]:
    """(our key prefix, official key prefix) pairs covering every FKE parameter (docs/architecture.md).

    Module prefixes end in '.', parameter names are complete; the official names are relative to
    ``kernel_estimator.{i}.`` / ``mid_kernel_estimator.{i}.`` (DeepRFTv2) or ``ker_ests.{i}.`` (ATD).
    """
    pairs = [
        ('proj_kernel.', 'feature_extract.intro_inp.0.'),
        ('proj_feature.', 'feature_extract.intro_deconv.0.'),
        ('spectral_embed.', 'intro.ending.0.'),
        ('otf_head.norm.', 'end_ker1.norm.'),
        ('otf_head.proj.', 'end_ker1.ending.0.'),
        ('fuse.', 'deblur_feature1.0.'),
        ('image_head.', 'end_feature1.0.'),
    ]
    for j in range(levels):
        pairs.append((f'column.alphas.{j}', f'subnets_ker.alpha{j}'))
        pairs.append((f'column.levels.{j}.block.', f'subnets_ker.level{j}.blocks.0.'))
        pairs.append((f'column.levels.{j}.fusion.', f'subnets_ker.level{j}.fusion.down.0.'))
    return pairs


FKE_OFFICIAL_RENAMES: list[tuple[str, str]] = fke_official_renames(4)
