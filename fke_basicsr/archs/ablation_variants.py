"""Ablation variants of DeepRFTv2 (paper §5, Tables 6 and 7), composed from the stock modules, never copied.

* :class:`AblationFKE` — the FKE with Table 7's switches: kernel estimated in the spatial domain then convolved
  (``domain='spatial'``) vs in Fourier space, the column's activation removed (``act=False``), the spectral
  product replaced by a sum (``combine='add'``, DeepRFT's way), the kernel estimated from B / Ŝ / e1 instead of
  d1 (``kernel_input``), and the cross-column skip of the sub-ResNet removed (``cross_skip=False``).
* :class:`MultiScaleInputEncoder` / :class:`MultiScaleOutputDecoder` — MIMO-UNet (Fig. 3 c, Eq. 5): every
  encoder level also takes an embedding of the image pyramid level of its resolution (concat + 1×1 conv), and
  the decoder gives one image per coarser resolution, as the authors' ``multiscale_enc`` option does.
* :class:`DeepRFTv2Ablation` — DeepRFTv2 plus those options (registered). With every new option at its default
  it is DeepRFTv2 exactly: same modules, same parameter names, same outputs.

The options DeepRFTv2 itself should gain to make this class unnecessary are listed in docs/ablation.md.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from fke_basicsr.archs.blocks import LayerNorm2d
from fke_basicsr.archs.deeprftv2_arch import Decoder, DeepRFTv2, Encoder
from fke_basicsr.archs.outputs import DeblurOutputs
from fke_basicsr.archs.fke import FKEOutput, FourierKernelEstimator
from fke_basicsr.ops.fft import irfft2, rfft2
from fke_basicsr.ops.pyramid import gaussian_pyramid
from fke_basicsr.registry import register

__all__ = ['FKE_DOMAINS', 'FKE_COMBINES', 'FKE_INPUTS', 'AblationFKE',
           'MultiScaleInputEncoder', 'MultiScaleOutputDecoder', 'DeepRFTv2Ablation']

FKE_DOMAINS = ('fourier', 'spatial')
FKE_COMBINES = ('mul', 'add')
# d1: the decoder feature (the paper's choice); e1: the encoder's finest feature; B: the blurry image of that
# scale; S: the latent sharp image Ŝ = head(d1) + B of that scale (Table 7, mid region)
FKE_INPUTS = ('d1', 'e1', 'B', 'S')


class SpatialKernelHead(nn.Module):
    """LayerNorm2d + 1×1 conv (w→w, bias): a real H×W kernel per channel, whose rfft2 is the OTF (Table 7
    "Spatial"; the authors' ``EstOTF(spatial=True)``)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = LayerNorm2d(width)
        self.proj = nn.Conv2d(width, width, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return rfft2(self.proj(self.norm(x)).float())


class AblationFKE(FourierKernelEstimator):
    """FourierKernelEstimator with the switches of paper Table 7 (defaults = the stock FKE, same parameters).

    Args (besides FourierKernelEstimator's):
        domain: 'fourier' estimates K from the spectrum of the kernel map (stock); 'spatial' runs the column on
            the spatial map and predicts a real full-size kernel k, applied as irfft2(Y ⊙ rfft2(k)) — a circular
            convolution of the feature with k.
        act: False replaces every ReLU / GELU *module* of the column by the identity ("Act ×"); the column must
            have one (the Table 7 rows use 'ResBlock').
        combine: 'mul' filters irfft2(Y ⊙ K) (convolution); 'add' gives irfft2(Y + K) (DeepRFT-like addition).
        kernel_input: 'd1' (stock) or 'e1' (in_channels channels) or 'B' / 'S' (image_channels channels): the map
            the kernel is estimated from; the filtered map is d1 in every case. Pass it as ``source`` to forward.
        cross_skip: False drops the 1×1 fusions of the previous column's next-level state (the skip r_{i+1} of
            the previous sub-ResNet into level i); the α-scaled same-level state, which makes the column
            reversible, stays.
    """

    def __init__(self, *args: Any, domain: str = 'fourier', act: bool = True, combine: str = 'mul',
                 kernel_input: str = 'd1', cross_skip: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for name, value, allowed in (('domain', domain, FKE_DOMAINS), ('combine', combine, FKE_COMBINES),
                                     ('kernel_input', kernel_input, FKE_INPUTS)):
            if value not in allowed:
                raise ValueError(f'{name}: expected one of {list(allowed)}, got {value!r}')
        for name, value in (('act', act), ('cross_skip', cross_skip)):
            if not isinstance(value, bool):
                raise ValueError(f'{name}: expected a bool, got {value!r}')
        self.domain, self.act, self.combine = domain, act, combine
        self.kernel_input, self.cross_skip = kernel_input, cross_skip
        w = self.width
        if kernel_input in ('B', 'S'):
            images = kwargs.get('image_channels', 3)
            self.proj_kernel = nn.Conv2d(images, w, 1, bias=False)
        if domain == 'spatial':
            self.spectral_embed = nn.Conv2d(w, w, 1, bias=False)  # the map itself, no [Re, Im] stacking
            self.otf_head = SpatialKernelHead(w)
        if not act:
            replaced = _strip_activations(self.column)
            if not replaced:
                raise ValueError('act: False needs a column block with ReLU/GELU modules (e.g. fke_block '
                                 "'ResBlock'); this column has none")
        if not cross_skip:
            for level in self.column.levels:
                level.fusion = None

    def extra_repr(self) -> str:
        return (super().extra_repr() + f', domain={self.domain!r}, act={self.act}, combine={self.combine!r}, '
                f'kernel_input={self.kernel_input!r}, cross_skip={self.cross_skip}')

    def filter_spectrum(self, kernel_map: Tensor, feature_map: Tensor,
                        state: Sequence[Tensor] | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """K from the kernel map (spectrum or, 'spatial', the map itself), then irfft2(Y ⊙ K) or irfft2(Y + K)."""
        if self.domain == 'fourier' and self.combine == 'mul':
            return super().filter_spectrum(kernel_map, feature_map, state)
        h, w = kernel_map.shape[-2:]
        if self.pad_to_even and (h % 2 or w % 2):
            raise ValueError('pad_to_even: not supported by the Table 7 variants (DeepRFTv2 maps are even)')
        if self.domain == 'fourier':
            spec_k = rfft2(kernel_map)
            x0 = self.spectral_embed(torch.cat([spec_k.real, spec_k.imag], dim=1).to(kernel_map.dtype))
        else:
            x0 = self.spectral_embed(kernel_map)
        states = self.column(x0, state)
        otf = self.otf_head(states[-1])
        spec_y = rfft2(feature_map)
        filtered = irfft2(spec_y * otf if self.combine == 'mul' else spec_y + otf, dtype=kernel_map.dtype)
        return filtered[..., :h, :w], tuple(states)

    def forward(self, feat: Tensor, state: Sequence[Tensor] | None = None, blur: Tensor | None = None,
                source: Tensor | None = None) -> FKEOutput:
        if self.kernel_input == 'd1':
            return super().forward(feat, state, blur)
        if self.window is not None:
            raise ValueError(f'kernel_input={self.kernel_input!r}: FKE windows (fke_window) are not supported')
        expected = self.proj_kernel.in_channels
        if not isinstance(source, Tensor) or source.shape[0] != feat.shape[0] or source.shape[1] != expected \
                or source.shape[-2:] != feat.shape[-2:]:
            raise ValueError(f'source: kernel_input={self.kernel_input!r} needs a (B, {expected}, '
                             f'{feat.shape[-2]}, {feat.shape[-1]}) map, got '
                             f'{tuple(source.shape) if isinstance(source, Tensor) else source!r}')
        if feat.shape[-1] % 2:
            raise ValueError(f'feat: width {feat.shape[-1]} is odd; the FKE needs even widths')
        filtered, new_state = self.filter_spectrum(self.proj_kernel(source), self.proj_feature(feat), state)
        out = self.fuse(torch.cat([filtered, feat], dim=1))
        image = None if self.image_head is None else self.image_head(out) + blur
        return FKEOutput(out, new_state, image)


def _strip_activations(module: nn.Module) -> int:
    """Replace every nn.ReLU / nn.GELU inside ``module`` by nn.Identity; returns how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, (nn.ReLU, nn.GELU)):
            setattr(module, name, nn.Identity())
            count += 1
        else:
            count += _strip_activations(child)
    return count


_STOCK_FKE = dict(domain='fourier', act=True, combine='mul', kernel_input='d1', cross_skip=True)


# ------------------------------------------------------------------------------------------------ MIMO-UNet
def _conv3x3(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias)


class MultiScaleInputEncoder(Encoder):
    """Encoder whose level j also takes an embedding (3×3 conv, no bias) of pyramid level j, fused by concat +
    1×1 conv before the blocks (MIMO-UNet, Eq. 5; the authors' ``multiscale_enc``). Set ``images`` first."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[Sequence[nn.Module]], image_channels: int,
                 save_memory: bool = False):
        super().__init__(channels, blocks, inject=True, save_memory=save_memory)
        self.embeds = nn.ModuleList([_conv3x3(image_channels, c, False) for c in channels])
        self.images: Sequence[Tensor] | None = None

    def forward(self, x: Tensor, previous: Sequence[Tensor | int], injected: Sequence[Tensor] = ()) -> list[Tensor]:
        if self.images is None or len(self.images) < len(self.embeds):
            raise ValueError(f'images: a MIMO encoder needs the {len(self.embeds)}-level image pyramid set first')
        return super().forward(x, previous, [e(img) for e, img in zip(self.embeds, self.images)])


class MultiScaleOutputDecoder(Decoder):
    """Decoder that also predicts one image at each coarser resolution: a 3×3 head (bias) on the latent (1/2^(n-1))
    and on each up-sampled decoder feature below full resolution, added to that pyramid level. Set ``images``
    first; the images are left in ``outputs`` (coarsest last)."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[Sequence[nn.Module]], image_channels: int,
                 save_memory: bool = False):
        super().__init__(channels, blocks, save_memory=save_memory)
        n = len(channels)
        # channels is coarse -> fine; resolution 1/2^k (k = 1..n-1) has channels[n-1-k]
        self.heads = nn.ModuleList([_conv3x3(channels[n - 1 - k], image_channels, True) for k in range(1, n)])
        self.images: Sequence[Tensor] | None = None
        self.outputs: list[Tensor] = []

    def forward(self, latent: Tensor, skips: Sequence[Tensor], previous: Tensor | int) -> list[Tensor]:
        dec = super().forward(latent, skips, previous)
        n = len(self.levels)
        if self.images is None or len(self.images) < n:
            raise ValueError(f'images: a MIMO decoder needs the {n}-level image pyramid set first')
        # feature at 1/2^k: the latent for k = n-1, else the output of decoder level n-2-k (after its up-sampler)
        feats = [dec[n - 2 - k] for k in range(1, n - 1)] + [latent]
        self.outputs = [head(f) + self.images[k] for k, (head, f) in enumerate(zip(self.heads, feats), start=1)]
        return dec


@register(ARCH_REGISTRY)
class DeepRFTv2Ablation(DeepRFTv2):
    """DeepRFTv2 with the ablation options of paper Tables 6/7 that DeepRFTv2 lacks (docs/ablation.md).

    Extra args:
        mimo: MIMO-UNet (Fig. 3 c): needs ``mid_scale=False``; multi-scale inputs at every encoder level and one
            extra image per coarser resolution (``half`` and ``quarter`` of :class:`DeblurOutputs`).
        fke_domain, fke_act, fke_combine, fke_input, fke_cross_skip: :class:`AblationFKE`'s domain, act,
            combine, kernel_input, cross_skip for every FKE (defaults = the stock FKE).
    Every other argument is DeepRFTv2's.
    """

    def __init__(self, *args: Any, mimo: bool = False, fke_domain: str = 'fourier', fke_act: bool = True,
                 fke_combine: str = 'mul', fke_input: str = 'd1', fke_cross_skip: bool = True, **kwargs: Any):
        if not isinstance(mimo, bool):
            raise ValueError(f'mimo: expected a bool, got {mimo!r}')
        if mimo and kwargs.get('mid_scale', True):
            raise ValueError('mimo: MIMO-UNet is a single-scale-branch UNet with pyramid inputs/outputs; '
                             'set mid_scale: false with mimo: true')
        ablation = dict(domain=fke_domain, act=fke_act, combine=fke_combine, kernel_input=fke_input,
                        cross_skip=fke_cross_skip)
        stock = ablation == _STOCK_FKE
        if not kwargs.get('fke', True) and not stock:
            raise ValueError(f'fke: the FKE options {ablation} need fke: true')
        # read by the construction hooks below, which DeepRFTv2.__init__ calls: the variants are built directly
        self._variant_options = dict(mimo=mimo, fke=None if stock else ablation)
        super().__init__(*args, **kwargs)
        self.mimo = mimo
        self.fke_options = ablation

    # ------------------------------------------------------------------------------------------- construction
    def _max_encoder(self, channels, blocks, save_memory, image_channels):
        if not self._variant_options['mimo']:
            return super()._max_encoder(channels, blocks, save_memory, image_channels)
        return MultiScaleInputEncoder(channels, blocks, image_channels, save_memory=save_memory)

    def _max_decoder(self, channels, blocks, save_memory, image_channels):
        if not self._variant_options['mimo']:
            return super()._max_decoder(channels, blocks, save_memory, image_channels)
        return MultiScaleOutputDecoder(channels, blocks, image_channels, save_memory=save_memory)

    def _estimator(self, **options: Any) -> FourierKernelEstimator:
        ablation = self._variant_options['fke']
        return super()._estimator(**options) if ablation is None else AblationFKE(**options, **ablation)

    def _run_fke(self, fke, feature, state, blur, encoded, sharp):
        """Hand each FKE the map its kernel is estimated from: B, e1 (the encoder's finest output) or Ŝ."""
        kind = getattr(fke, 'kernel_input', 'd1')
        if kind == 'd1':
            return super()._run_fke(fke, feature, state, blur, encoded, sharp)
        source = {'B': blur, 'e1': encoded, 'S': sharp}[kind]
        return fke(feature, state=state, blur=blur, source=source)

    # ------------------------------------------------------------------------------------------------ forward
    def forward_pyramid(self, images: Sequence[Tensor]) -> DeblurOutputs:
        if not self.mimo:
            return super().forward_pyramid(images)
        # the MIMO encoders/decoders read the whole pyramid; built from level 0 (identical to the parent's
        # pyramid, which only holds level 0 without the mid scale)
        pyramid = gaussian_pyramid(images[0], self.num_levels)
        for m in (*self.encoders_max, *self.decoders_max):
            m.images = pyramid
        try:
            full: list[Tensor] = []
            half: list[Tensor] = []
            quarter: list[Tensor] = []
            out = super().forward_pyramid(images)
            full = list(out.full)
            for dec in self.decoders_max:
                if len(dec.outputs) > 0:
                    half.append(dec.outputs[0])
                if len(dec.outputs) > 1:
                    quarter.extend(dec.outputs[1:])
                dec.outputs = []
            return DeblurOutputs(full, half, quarter)
        finally:
            for m in (*self.encoders_max, *self.decoders_max):
                m.images = None

