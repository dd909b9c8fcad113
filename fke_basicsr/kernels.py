"""What the FKE learned: the tensors behind the paper's Fig. 2, Fig. 6 and Fig. 8 (paper §3.1, §5.3).

* Fig. 2, :func:`blur_pattern_map`: ``σ(F⁻¹(ReLU(F(B))) − B/2)``. The paper's caption defines σ as the cyclic shift
  by [H/2, W/2] (not a sigmoid), which centres the map. F is the one-sided ``rfft2`` as in DeepRFT's Res-FFT-ReLU,
  the ReLU acts on the real and imaginary parts separately, and F⁻¹ is ``irfft2`` at the image size. Since
  ReLU(a) = (a + |a|)/2, the map equals ``σ(F⁻¹(|Re F(B)| + i·|Im F(B)|) / 2)``: a blur-direction pattern centred in
  the image. Computed on the luminance (0.299 R + 0.587 G + 0.114 B) by default, or per channel (``mode='rgb'``).
  ``sigmoid=True`` additionally squashes the map with a logistic function (an alternative reading of σ).
* Fig. 6, :func:`capture_fke`: forward hooks on every :class:`~fke_basicsr.archs.fke.FourierKernelEstimator` record
  its input feature ``d``, output feature, the spectral features ``r_0`` (the 1×1 embedding of [Re, Im] of
  F(d)) and ``r_1..r_L`` (the column's level outputs), and the estimated kernel spectrum ``K`` (the ``otf_head``
  output; no change to the FKE is needed). The spatial kernel is ``σ(irfft2(K))`` per channel (σ the same cyclic
  shift, so the kernel's origin is the image centre). When the FKE works in windows, the batch axis holds windows.
  :func:`gt_kernel` is the "ground-truth" kernel ``F⁻¹(F(B)/F(S))`` of the figure, regularised like the paper's
  Eq. 6: ``K = F(B)·conj(F(S)) / (|F(S)|² + ε·mean|F(S)|²)`` (ε = 1e-3 by default).
* Fig. 8, :func:`cka_to_kernel`: linear CKA (Kornblith et al. 2019) between each spectral feature (positions ×
  channels) and the ground-truth kernel spectrum at the FKE's resolution, represented by its [Re, Im] pair per
  frequency (positions × 2), the same [Re, Im] stacking the FKE applies to its input.

Kernel correlation (:func:`kernel_correlation`, :func:`demo_kernel_correlation`): Pearson correlation between a
known k×k kernel and the k×k centre crop of an estimated, centred spatial kernel. An FKE's estimate is the channel
mean of |k_c| (its kernels are per feature channel, up to sign); the mid-scale FKEs are compared with the true
kernel resized to half size (area interpolation, renormalised).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fke_basicsr.ops.fft import irfft2, rfft2

__all__ = ['blur_pattern_map', 'gt_kernel', 'KernelEstimate', 'FKECapture', 'capture_fke', 'spatial_kernel',
           'full_spectrum_magnitude', 'linear_cka', 'cka_to_kernel', 'kernel_correlation', 'fke_kernel_map',
           'KernelAnalysis', 'analyse', 'demo_kernel_correlation', 'to_luma']

_LUMA = (0.299, 0.587, 0.114)


def _as_batch(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4) or not x.is_floating_point():
        raise ValueError(f'{name}: expected a float (C, H, W) or (B, C, H, W) tensor, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    return x[None] if x.dim() == 3 else x


def to_luma(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB → (B, 1, H, W) luminance (BT.601 weights); other channel counts: the channel mean."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _centre(x: Tensor) -> Tensor:
    """The paper's σ: cyclic shift by [H/2, W/2] over the last two axes."""
    h, w = x.shape[-2:]
    return torch.roll(x, shifts=(h // 2, w // 2), dims=(-2, -1))


def blur_pattern_map(blur: Tensor, mode: str = 'luma', sigmoid: bool = False) -> Tensor:
    """Fig. 2: σ(F⁻¹(ReLU(F(B))) − B/2) of a (B, C, H, W) / (C, H, W) image in [0, 1] → (B, 1 or C, H, W)."""
    b = _as_batch(blur, 'blur')
    if mode not in ('luma', 'rgb'):
        raise ValueError(f"mode: expected 'luma' or 'rgb', got {mode!r}")
    if mode == 'luma':
        b = to_luma(b)
    h, w = b.shape[-2:]
    spec = rfft2(b)
    relu = torch.complex(spec.real.clamp_min(0), spec.imag.clamp_min(0))
    out = _centre(irfft2(relu, s=(h, w)) - b.float() / 2)
    return torch.sigmoid(out) if sigmoid else out


@dataclass
class KernelEstimate:
    """A kernel as a one-sided spectrum (B, C, H, W//2+1) and as a centred spatial map (B, C, H, W)."""
    spectrum: Tensor
    spatial: Tensor


def spatial_kernel(spectrum: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """σ(irfft2(K)): the centred spatial kernel of a one-sided spectrum (width 2·(W_f−1) unless ``size``)."""
    return _centre(irfft2(spectrum, s=size))


def gt_kernel(blur: Tensor, sharp: Tensor, eps: float = 1e-3, mode: str = 'luma') -> KernelEstimate:
    """Fig. 6 (c): F⁻¹(F(B)/F(S)) with Eq. 6's conjugate form and Tikhonov regularisation ε·mean|F(S)|²."""
    b, s = _as_batch(blur, 'blur'), _as_batch(sharp, 'sharp')
    if b.shape != s.shape:
        raise ValueError(f'sharp: expected the blurry image\'s shape {tuple(b.shape)}, got {tuple(s.shape)}')
    if not eps > 0:
        raise ValueError(f'eps: expected a positive regulariser, got {eps!r}')
    if mode == 'luma':
        b, s = to_luma(b), to_luma(s)
    elif mode != 'rgb':
        raise ValueError(f"mode: expected 'luma' or 'rgb', got {mode!r}")
    fb, fs = rfft2(b.double()), rfft2(s.double())
    power = fs.abs() ** 2
    k = fb * fs.conj() / (power + eps * power.mean(dim=(-2, -1), keepdim=True))
    return KernelEstimate(k, spatial_kernel(k, tuple(b.shape[-2:])))


def full_spectrum_magnitude(spectrum: Tensor, width: int | None = None) -> Tensor:
    """|X| of the full, centred (fftshifted) spectrum of a real signal from its one-sided spectrum."""
    h, wf = spectrum.shape[-2:]
    w = width or 2 * (wf - 1)
    mag = spectrum.abs()
    # Hermitian symmetry: |X[h, w]| = |X[-h mod H, W - w]| for the missing columns wf..W-1
    rows = (-torch.arange(h, device=mag.device)) % h
    cols = w - torch.arange(wf, w, device=mag.device)
    missing = mag[..., rows, :][..., cols]
    return torch.fft.fftshift(torch.cat([mag, missing], dim=-1), dim=(-2, -1))


# ------------------------------------------------------------------------------------------------ FKE capture


@dataclass
class FKECapture:
    """Everything one FKE call computed that the figures need (tensors detached, on the CPU)."""
    name: str
    input_feature: Tensor
    output_feature: Tensor
    spectral_features: list[Tensor] = field(default_factory=list)   # r_0, r_1 … r_L
    kernel_spectrum: Tensor | None = None

    @property
    def kernel_spatial(self) -> Tensor:
        """Centred spatial kernels per channel, σ(irfft2(K))."""
        return spatial_kernel(self.kernel_spectrum)

    @property
    def kernel_effective_spectrum(self) -> Tensor:
        """rfft2(irfft2(K)): the spectrum of the real kernel the FKE applies (irfft2 drops the imaginary parts of
        K's DC and Nyquist columns, which a one-sided spectrum of a real signal cannot have)."""
        return rfft2(irfft2(self.kernel_spectrum))


class capture_fke:
    """Context manager recording an :class:`FKECapture` per FKE call of ``model`` (``.captures``, call order)."""

    def __init__(self, model: nn.Module):
        from fke_basicsr.archs.fke import FourierKernelEstimator

        self.fkes = [(n, m) for n, m in model.named_modules() if isinstance(m, FourierKernelEstimator)]
        if not self.fkes:
            raise ValueError(f'model: {type(model).__name__} has no FourierKernelEstimator modules')
        self.captures: list[FKECapture] = []
        self._handles: list = []
        self._pending: dict[int, dict[str, Any]] = {}

    def _parts(self, fke: nn.Module) -> dict[str, Any]:
        return self._pending.setdefault(id(fke), {'spectral': []})

    def __enter__(self) -> 'capture_fke':
        for name, fke in self.fkes:
            def on_embed(m, inputs, out, fke=fke):
                self._parts(fke)['spectral'] = [out.detach().cpu()]

            def on_column(m, inputs, out, fke=fke):
                self._parts(fke)['spectral'] += [t.detach().cpu() for t in out]

            def on_otf(m, inputs, out, fke=fke):
                self._parts(fke)['kernel'] = out.detach().cpu()

            def on_fke(m, inputs, out, fke=fke, name=name):
                parts = self._pending.pop(id(fke), {'spectral': []})
                self.captures.append(FKECapture(name, inputs[0].detach().cpu(), out.feature.detach().cpu(),
                                                parts['spectral'], parts.get('kernel')))

            self._handles += [fke.spectral_embed.register_forward_hook(on_embed),
                              fke.column.register_forward_hook(on_column),
                              fke.otf_head.register_forward_hook(on_otf),
                              fke.register_forward_hook(on_fke)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# ------------------------------------------------------------------------------------------------ CKA / correlation


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of two representations of the same n examples, x (n, p) and y (n, q); in [0, 1]."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f'x, y: expected (n, p) and (n, q) with the same n, got {tuple(x.shape)}, {tuple(y.shape)}')
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    hsic = (y.T @ x).pow(2).sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    return float(hsic / norm) if norm > 0 else 0.0


def _resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    from fke_basicsr.ops.pyramid import gaussian_pyramid

    # the model's own pyramid when the size is a power-of-two reduction, else area interpolation
    h = x.shape[-2]
    levels = int(round(math.log2(h / size[0]))) + 1 if size[0] < h else 0
    if levels > 1:
        top = gaussian_pyramid(x, levels)[-1]
        if tuple(top.shape[-2:]) == tuple(size):
            return top
    return F.interpolate(x, size=size, mode='area')


def cka_to_kernel(capture: FKECapture, blur: Tensor, sharp: Tensor, eps: float = 1e-3) -> dict[str, float]:
    """Fig. 8: linear CKA of each spectral feature r_j of one FKE with the ground-truth kernel spectrum at the FKE's
    resolution ([Re, Im] per frequency); window batches are reduced to the first window."""
    if not capture.spectral_features:
        raise ValueError(f'capture: FKE {capture.name} recorded no spectral features')
    h, wf = capture.spectral_features[0].shape[-2:]
    w = 2 * (wf - 1)
    b, s = _as_batch(blur, 'blur'), _as_batch(sharp, 'sharp')
    if tuple(b.shape[-2:]) != (h, w):
        b, s = _resize_to(b, (h, w)), _resize_to(s, (h, w))
    k = gt_kernel(b[:1], s[:1], eps).spectrum[0, 0]
    y = torch.stack([k.real.reshape(-1), k.imag.reshape(-1)], dim=1)
    out = {}
    for j, feat in enumerate(capture.spectral_features):
        x = feat[0].reshape(feat.shape[1], -1).T
        out[f'r{j}'] = linear_cka(x, y)
    return out


def kernel_correlation(estimate: Tensor, kernel: Tensor | np.ndarray) -> float:
    """Pearson correlation of a known (k, k) kernel with the (k, k) centre crop of a centred (H, W) estimate."""
    kernel = torch.as_tensor(np.asarray(kernel), dtype=torch.float64)
    est = estimate.double().reshape(estimate.shape[-2:])
    kh, kw = kernel.shape
    h, w = est.shape
    if kh > h or kw > w:
        raise ValueError(f'kernel: {kh}x{kw} is larger than the estimate {h}x{w}')
    top, left = h // 2 - kh // 2, w // 2 - kw // 2
    crop = est[top:top + kh, left:left + kw]
    a, b = crop - crop.mean(), kernel - kernel.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def fke_kernel_map(capture: FKECapture) -> Tensor:
    """One (H, W) centred kernel image per FKE: the channel mean of |k_c| of the first window/batch element."""
    return capture.kernel_spatial[0].abs().mean(0)


def _half_kernel(kernel: np.ndarray) -> np.ndarray:
    import cv2

    k = np.asarray(kernel, np.float32)
    size = max(3, int(math.ceil(k.shape[0] / 2)) | 1)   # odd, so the kernel keeps a centre pixel
    small = cv2.resize(k, (size, size), interpolation=cv2.INTER_AREA)
    return small / max(float(small.sum()), 1e-12)


# ------------------------------------------------------------------------------------------------ one-call API


@dataclass
class KernelAnalysis:
    """Everything :func:`analyse` computes for one image."""
    blur_pattern: Tensor
    sharp_pattern: Tensor | None
    gt: KernelEstimate | None
    fkes: list[FKECapture]
    cka: dict[str, dict[str, float]]
    prediction: Tensor


def _crop_multiple(x: Tensor, m: int) -> Tensor:
    h, w = x.shape[-2:]
    return x[..., :h // m * m, :w // m * m]


def analyse(model: nn.Module, blur: Tensor, sharp: Tensor | None = None, eps: float = 1e-3,
            mode: str = 'luma') -> KernelAnalysis:
    """Run ``model`` (eval, no_grad) on ``blur`` (1, 3, H, W) in [0, 1] and collect the Fig. 2 / 6 / 8 tensors.

    Both images are cropped top-left to the model's ``size_multiple`` so the FKEs see the image unpadded.
    """
    b = _as_batch(blur, 'blur')[:1]
    m = int(getattr(model, 'size_multiple', 1) or 1)
    b = _crop_multiple(b, m)
    s = None
    if sharp is not None:
        s = _crop_multiple(_as_batch(sharp, 'sharp')[:1], m)
        if s.shape != b.shape:
            raise ValueError(f'sharp: expected the blurry image\'s shape {tuple(blur.shape)}, got {tuple(sharp.shape)}')
    model.eval()
    from fke_basicsr.archs.outputs import prediction

    with torch.no_grad(), capture_fke(model) as cap:
        pred = prediction(model(b)).detach().cpu()
    gt = gt_kernel(b, s, eps, mode) if s is not None else None
    cka = {c.name: cka_to_kernel(c, b, s, eps) for c in cap.captures} if s is not None else {}
    return KernelAnalysis(blur_pattern_map(b, mode), blur_pattern_map(s, mode) if s is not None else None, gt,
                          cap.captures, cka, pred)


def _read_rgb(path: str | os.PathLike) -> Tensor:
    from fke_basicsr.infer import image_to_tensor, read_image

    x, _ = image_to_tensor(read_image(path), 3)
    return x


def demo_kernel_correlation(model: nn.Module, root: str | os.PathLike, limit: int | None = None,
                            eps: float = 1e-3) -> dict[str, Any]:
    """Correlation of estimated and true kernels on the demo dataset (``root`` holds blur/, sharp/, kernels/).

    Per image: the regularised-division estimate F⁻¹(F(B)/F(S)) (a reference for what is recoverable), a centred
    delta (the no-blur baseline every centred blob already scores against) and each FKE's channel-mean |k| map
    (mid-scale FKEs against the half-size kernel). Returns per-image rows and means.
    """
    root = Path(root)
    names = sorted(p.stem for p in (root / 'kernels').glob('*.npy'))
    if not names:
        raise ValueError(f'root: no kernels/*.npy under {root} (expected the demo dataset layout)')
    rows = []
    for stem in names[:limit]:
        blur = _read_rgb(root / 'blur' / f'{stem}.png')
        sharp = _read_rgb(root / 'sharp' / f'{stem}.png')
        kernel = np.load(root / 'kernels' / f'{stem}.npy')
        res = analyse(model, blur, sharp, eps)
        delta = torch.zeros(res.gt.spatial.shape[-2:], dtype=torch.float64)
        delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1
        row = {'image': stem, 'gt_division': kernel_correlation(res.gt.spatial[0, 0], kernel),
               'delta_baseline': kernel_correlation(delta, kernel)}
        full_h = res.gt.spatial.shape[-2]
        for c in res.fkes:
            est = fke_kernel_map(c)
            ref = kernel if est.shape[-2] >= full_h else _half_kernel(kernel)
            row[c.name] = kernel_correlation(est, ref)
        rows.append(row)
    keys = [k for k in rows[0] if k != 'image']
    return {'images': len(rows), 'rows': rows, 'mean': {k: float(np.mean([r[k] for r in rows])) for k in keys}}
