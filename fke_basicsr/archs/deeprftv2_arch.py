"""DeepRFTv2: the Decoupled Multi-Scale UNet (DMS-UNet) with Fourier Kernel Estimators (paper §3; docs/architecture.md).

Columns ("sub-UNets", two in the paper) x two scales. Inside column i, in this order (docs/architecture.md, One column):
max-scale encoder -> max->mid injections -> mid-scale encoder -> mid decoder -> mid head + mid FKE ->
mid FKE feature fused into the max latent -> max decoder -> max head + max FKE.
Every encoder/decoder level adds the alpha-scaled same-level state of the previous column (RevCol-style, run by
:func:`fke_basicsr.ops.reversible.reversible_column`, memory-saving per column on request); each FKE hands its
sub-ResNet state to the same-scale FKE of the next column and its feature to the next column's image embedding.

Outputs per column: ``head(d) + B`` and the FKE image, at each scale: 4 full- and 4 half-resolution images for two
columns; the prediction is the last max-scale FKE image. Attribute names are ours; ``fke_basicsr.checkpoints``
maps them onto the authors' layout (docs/architecture.md, The authors' key layout).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from fke_basicsr.archs.blocks import BLOCK_KINDS, build_block
from fke_basicsr.archs.fke import FourierKernelEstimator
from fke_basicsr.archs.outputs import DeblurOutputs
from fke_basicsr.ops.geometry import window_option
from fke_basicsr.ops.pyramid import gaussian_pyramid
from fke_basicsr.ops.reversible import reversible_column
from fke_basicsr.registry import register

__all__ = ['DeblurOutputs', 'DeepRFTv2', 'VARIANTS']

# Block presets of the paper's two models (paper §4.1): -B puts NAFEVSBlocks in levels 1-2 of the max scale.
VARIANTS: dict[str, dict[str, Any]] = {
    'B': dict(max_enc_block_types=['naf', 'NAFEVSBlock', 'NAFEVSBlock'],
              max_dec_block_types=['NAFEVSBlock', 'NAFEVSBlock', 'naf'], mid_block_types='naf'),
    'S': dict(max_enc_block_types='naf', max_dec_block_types='naf', mid_block_types='naf'),
}
_DEFAULTS: dict[str, Any] = dict(num_columns=2, width=48, enc_blocks=[1, 4, 8], dec_blocks=[8, 4, 1],
                                 max_enc_block_types='naf', max_dec_block_types='naf', mid_block_types='naf',
                                 fke_width=48, fke_levels=4, fke_block='EVSS')
# Blocks that transpose/flip their input without undoing it (docs/architecture.md): a level needs an even count.
_ORIENTING = ('NAFEVSBlock', 'LocalNAFEVSBlock_patch')


def _down2x(c_in: int, c_out: int) -> nn.Conv2d:
    """2x2 stride-2 convolution without bias: every learned down-sampler of the network."""
    return nn.Conv2d(c_in, c_out, kernel_size=2, stride=2, bias=False)


def _conv3x3(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


class PixelShuffleUp(nn.Sequential):
    """1x1 conv (c -> 2c, no bias) then PixelShuffle(2): c/2 channels at twice the resolution."""

    def __init__(self, c: int):
        super().__init__(OrderedDict(conv=nn.Conv2d(c, 2 * c, 1, bias=False), shuffle=nn.PixelShuffle(2)))


class EncoderLevel(nn.Module):
    """Optional 2x down-sampling, optional fusion of an injected feature (concat + 1x1 conv), then blocks."""

    def __init__(self, c_in: int | None, c: int, blocks: Sequence[nn.Module], inject: bool = False):
        super().__init__()
        self.down = _down2x(c_in, c) if c_in is not None else None
        self.fuse = nn.Conv2d(2 * c, c, 1) if inject else None
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor, injected: Tensor | None = None) -> Tensor:
        if self.down is not None:
            x = self.down(x)
        if self.fuse is not None:
            x = self.fuse(torch.cat([x, injected], dim=1))  # own feature first, injected one second
        return self.blocks(x)


class DecoderLevel(nn.Module):
    """Blocks, then (except at the finest level) the up-sampler: blocks come first in the decoder (paper Eq. 14)."""

    def __init__(self, c: int, blocks: Sequence[nn.Module], upsample: bool):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.up = PixelShuffleUp(c) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(x)
        return self.up(x) if self.up is not None else x


class Encoder(nn.Module):
    """One column's encoder at one scale: c_j = alpha_j * c_j^prev + level_j(c_{j-1} or x [, u_j]) (paper Eq. 12)."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[Sequence[nn.Module]], inject: bool = False,
                 save_memory: bool = False):
        super().__init__()
        self.save_memory = save_memory
        self.alphas = nn.ParameterList([nn.Parameter(torch.full((1, c, 1, 1), 0.5)) for c in channels])
        self.levels = nn.ModuleList([EncoderLevel(channels[j - 1] if j else None, c, blocks[j], inject)
                                     for j, c in enumerate(channels)])

    def forward(self, x: Tensor, previous: Sequence[Tensor | int], injected: Sequence[Tensor] = ()) -> list[Tensor]:
        extras = [[u] for u in injected] if injected else ()
        return reversible_column(list(self.levels), list(self.alphas), x, list(previous), extras, self.save_memory)


class Decoder(nn.Module):
    """One column's decoder (paper Eq. 14): d_j = alpha_j * skip_j + level_j(d_{j-1} or latent).

    The skips are the encoder features of the matching resolution, U-Net style but added, not concatenated;
    the finest level's "skip" is the previous column's decoder output.
    """

    def __init__(self, channels: Sequence[int], blocks: Sequence[Sequence[nn.Module]], save_memory: bool = False):
        super().__init__()
        n = len(channels)
        self.save_memory = save_memory
        out_channels = [channels[j + 1] for j in range(n - 1)] + [channels[-1]]
        self.alphas = nn.ParameterList([nn.Parameter(torch.full((1, c, 1, 1), 0.5)) for c in out_channels])
        self.levels = nn.ModuleList([DecoderLevel(c, blocks[j], upsample=j < n - 1) for j, c in enumerate(channels)])

    def forward(self, latent: Tensor, skips: Sequence[Tensor], previous: Tensor | int) -> list[Tensor]:
        return reversible_column(list(self.levels), list(self.alphas), latent, [*skips, previous], (),
                                 self.save_memory)


class LatentFusion(nn.Module):
    """Mid-scale feature -> 2x2 stride-2 conv to the latent width, concat before the max latent, 1x1 conv.

    ``factor`` is the resolution ratio between the mid-scale feature (H/2) and the max latent (H/2^(L-1)):
    2 for the paper's three levels; other level counts get a k×k stride-k conv with k = factor.
    """

    def __init__(self, c_in: int, c_latent: int, factor: int = 2):
        super().__init__()
        self.down = nn.Conv2d(c_in, c_latent, kernel_size=factor, stride=factor, bias=False)
        self.fuse = nn.Conv2d(2 * c_latent, c_latent, 1)

    def forward(self, mid_feature: Tensor, latent: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.down(mid_feature), latent], dim=1))


@dataclass
class _ScaleState:
    """What one scale hands from a column to the next; 0 / None = nothing yet (first column)."""
    levels: list = field(default_factory=list)   # encoder-level states, overwritten by the decoder outputs
    dec: Any = 0                                 # finest decoder level output
    feature: Tensor | None = None                # FKE feature (decoder feature without FKE) for the embedding
    fke: Any = None                              # FKE sub-ResNet state


def _kinds(value: Any, n: int, columns: int, name: str) -> list[list[str]]:
    """Block kinds as [column][level] from a name, a per-level list, or per-column lists of per-level lists."""
    if isinstance(value, str):
        value = [value] * n
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        if len(value) != n:
            raise ValueError(f'{name}: expected {n} block names (one per level), got {len(value)}: {list(value)}')
        rows = [list(value)] * columns
    elif isinstance(value, (list, tuple)) and len(value) >= columns:
        rows = [_kinds(v, n, 1, f'{name}[{i}]')[0] for i, v in enumerate(value[:columns])]
    else:
        raise ValueError(f'{name}: expected a block name, a list of {n} names (one per level) or one such list '
                         f'per column ({columns}), got {value!r}')
    for row in rows:
        for kind in row:
            if kind not in BLOCK_KINDS:
                raise ValueError(f'{name}: unknown block {kind!r}; expected one of {list(BLOCK_KINDS)}')
    return rows


def _flags(value: Any, columns: int, name: str) -> list[bool]:
    """A save_memory option: one bool, or one per column (extra entries are ignored, as in the authors' YAMLs)."""
    if isinstance(value, bool):
        return [value] * columns
    if isinstance(value, (list, tuple)) and len(value) >= columns and all(isinstance(v, bool) for v in value):
        return list(value[:columns])
    raise ValueError(f'{name}: expected a bool or a list of >= {columns} bools (one per column), got {value!r}')


def _scaled(size: Any, factor: int) -> Any:
    """A train_size (int or [h, w]) at a level of 1/factor resolution."""
    if size is None:
        return None
    if isinstance(size, (list, tuple)):
        return [max(1, int(s) // factor) for s in size]
    return max(1, int(size) // factor)


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{name}: expected a positive int, got {value!r}')
    return value


@register(ARCH_REGISTRY)
class DeepRFTv2(nn.Module):
    """DeepRFTv2-S / -B (paper §3; docs/architecture.md); ``variant`` presets the blocks, any option overrides.

    Returns :class:`~fke_basicsr.archs.outputs.DeblurOutputs` (training and eval); its ``prediction`` is the
    (B, out_channels, H, W) restored image.

    Ablation switches (paper Tables 6/7): ``num_columns``, ``width``, ``enc_blocks``/``dec_blocks``, the block
    kinds per part, ``fke_*``, ``mid_scale``, ``fke``. ``fke=False`` removes the FKEs and their image outputs;
    the finest decoder feature then takes the FKE feature's two roles (fused into the next column's embedding,
    and at the mid scale into the max latent), so each column yields one image per scale and the prediction is
    the last max-scale head output. ``mid_scale=False`` removes the half-resolution branch (its encoder, decoder,
    head, FKE, the max->mid injections and the latent fusion); ``half`` is then empty.

    ``fke_window`` (a size, or ``{size, overlap}``) makes the FKEs work in windows (DPDD; halved for the mid
    FKEs): non-overlapping in training, overlapping and blended in eval. The authors' FKEs always use the test
    tile size as window; that only matters for maps larger than it, which no configuration but DPDD's
    (``fke_window: {size: 320, overlap: 48}``) meets. The output channels equal ``inp_channels``.
    ``scan_window`` is the EVSS2D scan window of the windowed blocks (``LocalNAFEVSBlock_patch``, 'VSBlock'); the
    authors call it ``patch_size``, a name ATD uses for its patch embedding, so ours differs (the options check
    names it when a file still says ``patch_size``). ``num_columns`` is the number of sub-UNets (the authors' name, kept for their options files).
    Input sizes must be multiples of ``size_multiple`` (8). Padding, whole-image vs tiled evaluation (the
    authors' tiles are cut from the whole-image pyramid, see :meth:`tile_inputs`) belong to
    :class:`fke_basicsr.protocol.TestTimeProtocol` (docs/evaluation.md).
    """

    size_multiple = 8
    official_layout = 'DeepRFTv2'

    def __init__(self, variant: str | None = 'B', inp_channels: int = 3,
                 num_columns: int | None = None, width: int | None = None,
                 enc_blocks: Sequence[int] | None = None, dec_blocks: Sequence[int] | None = None,
                 max_enc_block_types: Any = None, max_dec_block_types: Any = None, mid_block_types: Any = None,
                 train_size: int | Sequence[int] | None = None, scan_window: int | Sequence[int] | None = None,
                 fke: bool = True, fke_width: int | None = None, fke_levels: int | None = None,
                 fke_block: str | None = None, mid_scale: bool = True,
                 save_memory_encoder: bool | Sequence[bool] = False,
                 save_memory_decoder: bool | Sequence[bool] = False,
                 save_memory_fke: bool | Sequence[bool] = False, fke_window: Any = None):
        super().__init__()
        if variant is not None and variant not in VARIANTS:
            raise ValueError(f'variant: expected one of {sorted(VARIANTS)} or None, got {variant!r}')
        preset = {**_DEFAULTS, **(VARIANTS[variant] if variant else {})}
        given = dict(num_columns=num_columns, width=width, enc_blocks=enc_blocks, dec_blocks=dec_blocks,
                     max_enc_block_types=max_enc_block_types, max_dec_block_types=max_dec_block_types,
                     mid_block_types=mid_block_types, fke_width=fke_width, fke_levels=fke_levels, fke_block=fke_block)
        opt = {k: preset[k] if v is None else v for k, v in given.items()}
        for name in ('num_columns', 'width', 'fke_width', 'fke_levels'):
            _positive_int(name, opt[name])
        _positive_int('inp_channels', inp_channels)
        out_channels = inp_channels  # every output is a residual added to the input image
        for name in ('enc_blocks', 'dec_blocks'):
            v = opt[name]
            if not isinstance(v, (list, tuple)) or not v or not all(
                    isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in v):
                raise ValueError(f'{name}: expected a non-empty list of positive block counts per level, got {v!r}')
        enc_n, dec_n = list(opt['enc_blocks']), list(opt['dec_blocks'])
        if len(enc_n) != len(dec_n):
            raise ValueError(f'enc_blocks / dec_blocks: expected as many levels, got {enc_n} and {dec_n}')
        if mid_scale and len(enc_n) < 2:
            raise ValueError(f'enc_blocks: the mid scale fuses into the max latent, which needs at least 2 levels; '
                             f'got {enc_n} (or set mid_scale: false)')
        for name, v in (('fke', fke), ('mid_scale', mid_scale)):
            if not isinstance(v, bool):
                raise ValueError(f'{name}: expected a bool, got {v!r}')
        if not isinstance(opt['fke_block'], str):
            raise ValueError(f"fke_block: expected a block name such as 'EVSS', got {opt['fke_block']!r}")

        ncol, width, nlev = opt['num_columns'], opt['width'], len(enc_n)
        self.variant = variant
        self.num_columns, self.num_levels, self.width = ncol, nlev, width
        self.use_fke, self.mid_scale = fke, mid_scale
        # max scale: nlev-1 stride-2 stages; the mid scale adds a factor 2; the FKE's rfft2/irfft2 round trip
        # needs even widths at every scale it runs on
        multiple = 2 ** (nlev - 1) * (2 if mid_scale else 1)
        if fke:
            multiple = max(multiple, 4 if mid_scale else 2)
        self.size_multiple = multiple
        # sizes may be an int or [h, w], as in the authors' YAMLs
        window, window_overlap = window_option(fke_window, 'fke_window')
        if window is not None and (window[0] % 2 or window[1] % 2):
            raise ValueError(f'fke_window: expected even sizes (the mid-scale FKEs use half), got {fke_window!r}')
        if window_overlap[0] % 2 or window_overlap[1] % 2:
            raise ValueError(f'fke_window.overlap: expected even sizes, got {fke_window!r}')

        kinds_enc = _kinds(opt['max_enc_block_types'], nlev, ncol, 'max_enc_block_types')
        kinds_dec = _kinds(opt['max_dec_block_types'], nlev, ncol, 'max_dec_block_types')
        kinds_mid = _kinds(opt['mid_block_types'], nlev, ncol, 'mid_block_types')
        flags_enc = _flags(save_memory_encoder, ncol, 'save_memory_encoder')
        flags_dec = _flags(save_memory_decoder, ncol, 'save_memory_decoder')
        flags_fke = _flags(save_memory_fke, ncol, 'save_memory_fke')

        chans = [width * 2 ** j for j in range(nlev)]
        # TLC pooling size per level: encoders train_size / 2^level, decoders train_size / 2^(n-1-level);
        # the mid scale starts from train_size / 2
        enc_sizes = [_scaled(train_size, 2 ** j) for j in range(nlev)]
        dec_sizes = enc_sizes[::-1]
        mid_enc_sizes = [_scaled(train_size, 2 ** (j + 1)) for j in range(nlev)]
        mid_dec_sizes = mid_enc_sizes[::-1]

        def blocks(kinds: list[str], counts: list[int], level_chans: list[int], sizes: list, name: str):
            out = []
            for j in range(nlev):
                if kinds[j] in _ORIENTING and counts[j] % 2:
                    raise ValueError(f'{name}: level {j} has {counts[j]} {kinds[j]}s; they transpose/flip without '
                                     f'undoing it, so a level needs an even number of them')
                if kinds[j] in ('localnaf', 'LocalNAFEVSBlock_patch') and train_size is None:
                    raise ValueError(f"train_size: block {kinds[j]!r} (TLC local pooling) needs it, e.g. 256")
                out.append([build_block(kinds[j], level_chans[j], k, train_size=sizes[j], window=scan_window)
                            for k in range(counts[j])])
            return out

        self.embed_max = nn.ModuleList([_conv3x3(inp_channels, width, False) for _ in range(ncol)])
        # columns >= 1 fuse the previous column's FKE feature into the image embedding (index 0: nothing to fuse)
        self.feedback_max = nn.ModuleList([nn.Identity()] + [nn.Conv2d(2 * width, width, 1) for _ in range(ncol - 1)])
        self.encoders_max = nn.ModuleList([
            self._max_encoder(chans, blocks(kinds_enc[i], enc_n, chans, enc_sizes, 'max_enc_block_types'), f,
                              inp_channels) for i, f in enumerate(flags_enc)])
        self.decoders_max = nn.ModuleList([
            self._max_decoder(chans[::-1], blocks(kinds_dec[i], dec_n, chans[::-1], dec_sizes, 'max_dec_block_types'),
                              f, out_channels) for i, f in enumerate(flags_dec)])
        self.head_max = nn.ModuleList([_conv3x3(width, out_channels, True) for _ in range(ncol)])
        if mid_scale:
            self.embed_mid = nn.ModuleList([_conv3x3(inp_channels, width, False) for _ in range(ncol)])
            self.feedback_mid = nn.ModuleList(
                [nn.Identity()] + [nn.Conv2d(2 * width, width, 1) for _ in range(ncol - 1)])
            self.max_to_mid = nn.ModuleList([nn.ModuleList([_down2x(c, c) for c in chans]) for _ in range(ncol)])
            self.encoders_mid = nn.ModuleList([
                Encoder(chans, blocks(kinds_mid[i], enc_n, chans, mid_enc_sizes, 'mid_block_types'), inject=True,
                        save_memory=f) for i, f in enumerate(flags_enc)])
            self.decoders_mid = nn.ModuleList([
                Decoder(chans[::-1], blocks(kinds_mid[i], dec_n, chans[::-1], mid_dec_sizes, 'mid_block_types'),
                        save_memory=f) for i, f in enumerate(flags_dec)])
            self.head_mid = nn.ModuleList([_conv3x3(width, out_channels, True) for _ in range(ncol)])
            self.latent_fuse = nn.ModuleList([LatentFusion(width, chans[-1], 2 ** (nlev - 2)) for _ in range(ncol)])
        if fke:
            def estimators(window: tuple[int, int] | None, overlap: tuple[int, int]) -> nn.ModuleList:
                return nn.ModuleList([self._estimator(
                    in_channels=width, width=opt['fke_width'], levels=opt['fke_levels'], first_column=i == 0,
                    block=opt['fke_block'], image_head=True, image_channels=out_channels, window=window,
                    window_overlap=overlap if any(overlap) else 0, save_memory=flags_fke[i]) for i in range(ncol)])

            self.fke_max = estimators(window, window_overlap)
            if mid_scale:
                self.fke_mid = estimators(None if window is None else (window[0] // 2, window[1] // 2),
                                          (window_overlap[0] // 2, window_overlap[1] // 2))

    # -- construction hooks: a subclass (the ablation variants) builds its own parts here, directly -----------------
    def _max_encoder(self, channels: list[int], blocks: list, save_memory: bool, image_channels: int) -> Encoder:
        return Encoder(channels, blocks, save_memory=save_memory)

    def _max_decoder(self, channels: list[int], blocks: list, save_memory: bool, image_channels: int) -> Decoder:
        return Decoder(channels, blocks, save_memory=save_memory)

    def _estimator(self, **options: Any) -> FourierKernelEstimator:
        return FourierKernelEstimator(**options)

    def _run_fke(self, fke: FourierKernelEstimator, feature: Tensor, state: Any, blur: Tensor, encoded: Tensor,
                 sharp: Tensor):
        """One FKE call of a sub-UNet: ``feature`` d1, ``blur`` B, ``encoded`` e1 and ``sharp`` head(d1) + B of
        that scale (the last two are what the Table 7 variants may estimate the kernel from)."""
        return fke(feature, state=state, blur=blur)

    # ------------------------------------------------------------------------------------------------------------
    def set_save_memory(self, encoder: bool | None = None, decoder: bool | None = None,
                        fke: bool | None = None) -> 'DeepRFTv2':
        """Switch the reversible (memory-saving) mode of all columns' encoders / decoders / FKEs; returns self."""
        for flag, names in ((encoder, ('encoders_max', 'encoders_mid')), (decoder, ('decoders_max', 'decoders_mid')),
                            (fke, ('fke_max', 'fke_mid'))):
            if flag is None:
                continue
            for name in names:
                for m in getattr(self, name, ()):
                    m.save_memory = bool(flag)
        return self

    def _column(self, i: int, images: Sequence[Tensor], mx: _ScaleState, md: _ScaleState,
                full: list[Tensor], half: list[Tensor]) -> None:
        """Column i (docs/architecture.md), updating the carried states in place and appending its outputs."""
        n = self.num_levels
        x = self.embed_max[i](images[0])
        if i:
            x = self.feedback_max[i](torch.cat([x, mx.feature], dim=1))
        enc = self.encoders_max[i](x, mx.levels or [0] * n)
        latent = enc[-1]
        if self.mid_scale:
            xm = self.embed_mid[i](images[1])
            if i:
                xm = self.feedback_mid[i](torch.cat([xm, md.feature], dim=1))
            injected = [down(e) for down, e in zip(self.max_to_mid[i], enc)]
            menc = self.encoders_mid[i](xm, md.levels or [0] * n, injected)
            mdec = self.decoders_mid[i](menc[-1], menc[:-1][::-1], md.dec)
            # the decoder outputs overwrite the level states the next column receives; the latent stays
            md.levels, md.dec = [*mdec[:-1][::-1], menc[-1]], mdec[-1]
            half.append(self.head_mid[i](mdec[-1]) + images[1])
            md.feature = mdec[-1]
            if self.use_fke:
                out = self._run_fke(self.fke_mid[i], mdec[-1], md.fke, images[1], menc[0], half[-1])
                md.feature, md.fke = out.feature, out.state
                half.append(out.image)
            latent = self.latent_fuse[i](md.feature, latent)
        dec = self.decoders_max[i](latent, enc[:-1][::-1], mx.dec)
        mx.levels, mx.dec = [*dec[:-1][::-1], latent], dec[-1]
        full.append(self.head_max[i](dec[-1]) + images[0])
        mx.feature = dec[-1]
        if self.use_fke:
            out = self._run_fke(self.fke_max[i], dec[-1], mx.fke, images[0], enc[0], full[-1])
            mx.feature, mx.fke = out.feature, out.state
            full.append(out.image)

    def forward_pyramid(self, images: Sequence[Tensor]) -> DeblurOutputs:
        """All columns on a given image pyramid [B1, B2] (B2 unused without the mid scale)."""
        full: list[Tensor] = []
        half: list[Tensor] = []
        mx, md = _ScaleState(), _ScaleState()
        for i in range(self.num_columns):
            self._column(i, images, mx, md, full, half)
        return DeblurOutputs(full, half)

    # ------------------------------------------------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        channels = self.embed_max[0].in_channels
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f'x: expected a (B, {channels}, H, W) tensor, got '
                             f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f'x: input size {h}x{w} (HxW) is not a multiple of {m}; DeepRFTv2 needs H and W '
                             f'divisible by {m}. Pad or crop the image, or run it through '
                             f'fke_basicsr.protocol.TestTimeProtocol (pads to {h + -h % m}x{w + -w % m} and crops '
                             f'the prediction back; val.size_multiple / val.pad_mode in the options).')

    # test-time tiling hooks (fke_basicsr.protocol.TestTimeProtocol): the authors cut the tiles from the pyramid
    # of the whole image, level k into tiles of tile_size / 2^k overlapping by overlap / 2^k
    @property
    def tile_input_scales(self) -> tuple[Fraction, ...]:
        return (Fraction(1), Fraction(1, 2)) if self.mid_scale else (Fraction(1),)

    def tile_inputs(self, x: Tensor) -> list[Tensor]:
        """The whole-image stage of a tiled run: the Gaussian pyramid [B1, B2] (B1 alone without the mid scale)."""
        self._check_input(x)
        return gaussian_pyramid(x, 2 if self.mid_scale else 1)

    def forward_tiles(self, inputs: Sequence[Tensor]) -> DeblurOutputs:
        """Tiles of the pyramid levels → all outputs of those tiles."""
        return self.forward_pyramid(inputs)

    def forward(self, x: Tensor) -> DeblurOutputs:
        """Blurry images (B, C, H, W), H and W multiples of ``size_multiple`` -> :class:`DeblurOutputs`."""
        return self.forward_pyramid(self.tile_inputs(x))
