"""Did the FKE learn the blur? Frequency-domain agreement of each FKE's estimated transfer function with the true
kernel's OTF, and Fig. 8's CKA against the true kernel spectrum (paper §3.1, §3.2, Figs. 6 and 8;
docs/fke_evidence.md).

A spatial correlation of a centred estimate with a compact kernel cannot tell learning from structure: any centred
blob correlates with any compact kernel. These scores compare spectra instead, on the frequencies the true kernel
actually attenuates (|OTF| < ``threshold``, DC excluded), where a blob and a motion kernel differ:

* ``otf_mag``: Pearson correlation of |K_c| with |OTF| over those frequencies (invariant to the channel's scale).
* ``otf_phase``: phase agreement |Σ |OTF|·e^{i(arg K_c − arg OTF)}| / Σ |OTF| (1: the phases match up to one
  constant offset, e.g. a sign; ≈ 0: unrelated phases).
* ``cka_r0`` / ``cka_rL``: linear CKA (Kornblith et al. 2019) of the FKE's first and last spectral features r_0,
  r_L (frequencies × channels) with the true OTF as [Re, Im] per frequency (frequencies × 2), as Fig. 8.

An FKE has one estimated spectrum K_c per channel; ``otf_mag`` / ``otf_phase`` take its best channel (the paper's
Fig. 6 shows single kernels), and ``*_mean`` keys the channel mean. The same scores of the regularised division
F⁻¹(F(B)/F(S)) (:func:`fke_basicsr.kernels.gt_kernel`, one channel) are the ceiling of what the image pair
allows; the untrained network (same architecture, its initial weights) is the baseline. Report all three.

The true OTF of a k×k kernel at an (H, W) resolution is rfft2 of the kernel with its centre pixel moved to the
origin (``blur = kernel ⊛ sharp``, the convolution the demo dataset applies), so a perfect estimate has the same
phase. Mid-scale FKEs (half resolution) are compared with the half-size kernel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fke_basicsr.kernels import FKECapture, _half_kernel, _read_rgb, _resize_to, analyse, gt_kernel, linear_cka

__all__ = ['kernel_otf', 'attenuated_mask', 'otf_agreement', 'cka_to_otf', 'division_scores', 'identity_scores',
           'fke_scores',
           'kernel_agreement', 'agreement_table', 'METRIC_KEYS']

METRIC_KEYS = ('otf_mag', 'otf_phase', 'cka_r0', 'cka_rL')


def kernel_otf(kernel: np.ndarray | Tensor, size: tuple[int, int]) -> Tensor:
    """One-sided OTF (H, W//2+1), complex128, of a (k, k) kernel whose centre pixel is moved to the origin."""
    k = torch.as_tensor(np.asarray(kernel), dtype=torch.float64)
    if k.dim() != 2:
        raise ValueError(f'kernel: expected a 2-D (k, k) array, got shape {tuple(k.shape)}')
    h, w = size
    kh, kw = k.shape
    if kh > h or kw > w:
        raise ValueError(f'kernel: {kh}x{kw} does not fit the {h}x{w} resolution it is compared at')
    padded = torch.zeros(h, w, dtype=torch.float64)
    padded[:kh, :kw] = k
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.rfft2(padded)


def attenuated_mask(otf: Tensor, threshold: float = 0.9) -> Tensor:
    """Boolean mask of the frequencies the kernel attenuates: |OTF| < ``threshold`` (the DC term excluded)."""
    mask = otf.abs() < threshold
    mask[..., 0, 0] = False
    return mask


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last axis (a: (..., n), b: (n,))."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean()
    denom = a.norm(dim=-1) * b.norm()
    return torch.where(denom > 0, (a * b).sum(-1) / denom.clamp_min(1e-300), torch.zeros_like(denom))


def otf_agreement(estimate: Tensor, otf: Tensor, threshold: float = 0.9) -> dict[str, float]:
    """``otf_mag`` / ``otf_phase`` (best channel) and ``*_mean`` (channel mean) of an estimated one-sided spectrum
    (C, H, Wf) or (H, Wf) against the true one-sided OTF (H, Wf), over :func:`attenuated_mask`."""
    est = estimate.to(torch.complex128)
    est = est[None] if est.dim() == 2 else est
    if est.shape[-2:] != otf.shape[-2:]:
        raise ValueError(f'estimate: spectrum {tuple(est.shape[-2:])} does not match the OTF {tuple(otf.shape)}')
    mask = attenuated_mask(otf, threshold)
    if int(mask.sum()) < 2:
        raise ValueError(f'threshold: fewer than 2 frequencies with |OTF| < {threshold}; the kernel barely blurs '
                         'at this resolution (raise the threshold)')
    e, t = est[:, mask], otf[mask]
    mag = _pearson(e.abs(), t.abs())
    unit = e / e.abs().clamp_min(1e-300)
    phase = (unit * t.conj()).sum(-1).abs() / t.abs().sum()
    return {'otf_mag': float(mag.max()), 'otf_phase': float(phase.max()),
            'otf_mag_mean': float(mag.mean()), 'otf_phase_mean': float(phase.mean())}


def _re_im(spectrum: Tensor) -> Tensor:
    """(H, Wf) complex → (H·Wf, 2) [Re, Im] rows, one per frequency."""
    return torch.stack([spectrum.real.reshape(-1), spectrum.imag.reshape(-1)], dim=1)


def cka_to_otf(capture: FKECapture, otf: Tensor) -> dict[str, float]:
    """Fig. 8 against the true kernel: linear CKA of r_0 and r_L (first batch element) with the OTF's [Re, Im]."""
    if not capture.spectral_features:
        raise ValueError(f'capture: FKE {capture.name} recorded no spectral features')
    y = _re_im(otf)
    out = {}
    for key, feat in (('cka_r0', capture.spectral_features[0]), ('cka_rL', capture.spectral_features[-1])):
        if feat.shape[-2:] != otf.shape:
            raise ValueError(f'capture: {capture.name} features {tuple(feat.shape[-2:])} do not match the OTF '
                             f'{tuple(otf.shape)}')
        out[key] = linear_cka(feat[0].reshape(feat.shape[1], -1).T, y)
    return out


def _kernel_at(kernel: np.ndarray, h: int, full_h: int) -> np.ndarray:
    return kernel if h >= full_h else _half_kernel(kernel)


def fke_scores(capture: FKECapture, kernel: np.ndarray, full_h: int, threshold: float = 0.9) -> dict[str, float]:
    """All :data:`METRIC_KEYS` (and the channel means) of one FKE call against the true (k, k) kernel; FKEs at
    half the image height are compared with the half-size kernel."""
    spec = capture.kernel_effective_spectrum[0]
    h, wf = spec.shape[-2:]
    otf = kernel_otf(_kernel_at(kernel, h, full_h), (h, 2 * (wf - 1)))
    return {**otf_agreement(spec, otf, threshold), **cka_to_otf(capture, otf)}


def division_scores(blur: Tensor, sharp: Tensor, kernel: np.ndarray, size: tuple[int, int], full_h: int,
                    threshold: float = 0.9, eps: float = 1e-3) -> dict[str, float]:
    """The ceiling: the same scores of the regularised division F⁻¹(F(B)/F(S)) at resolution ``size`` (CKA of its
    [Re, Im] with the OTF's stands in for both ``cka_r0`` and ``cka_rL``)."""
    b, s = blur[:1], sharp[:1]
    if tuple(b.shape[-2:]) != tuple(size):
        b, s = _resize_to(b, size), _resize_to(s, size)
    spec = gt_kernel(b, s, eps).spectrum[0, 0]
    otf = kernel_otf(_kernel_at(kernel, size[0], full_h), size)
    cka = linear_cka(_re_im(spec), _re_im(otf))
    return {**otf_agreement(spec, otf, threshold), 'cka_r0': cka, 'cka_rL': cka}


def identity_scores(kernel: np.ndarray, size: tuple[int, int], full_h: int,
                    threshold: float = 0.9) -> dict[str, float]:
    """The scores of the identity filter (a centred delta, K = 1 at every frequency) at resolution ``size``: what
    an FKE that learned to pass its feature through unchanged scores (its phase score is not 0: a compact kernel's
    OTF is mostly in phase with 1 at low frequencies). Its magnitude score and CKA are 0 (a constant)."""
    otf = kernel_otf(_kernel_at(kernel, size[0], full_h), size)
    return {**otf_agreement(torch.ones_like(otf), otf, threshold), 'cka_r0': 0.0, 'cka_rL': 0.0}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def kernel_agreement(model: nn.Module, root: str | os.PathLike, limit: int | None = None, threshold: float = 0.9,
                     eps: float = 1e-3) -> dict[str, Any]:
    """Scores of every FKE of ``model`` and of the division ceiling over a demo-layout folder (blur/, sharp/,
    kernels/*.npy). Returns ``{'images', 'fke': {name: means}, 'all_fkes': means over FKEs, 'division': means over
    the FKEs' resolutions, 'rows': per image}``. The model is put in eval mode."""
    root = Path(root)
    names = sorted(p.stem for p in (root / 'kernels').glob('*.npy'))[:limit]
    if not names:
        raise ValueError(f'root: no kernels/*.npy under {root} (expected the demo dataset layout)')
    rows = []
    for stem in names:
        blur, sharp = _read_rgb(root / 'blur' / f'{stem}.png'), _read_rgb(root / 'sharp' / f'{stem}.png')
        kernel = np.load(root / 'kernels' / f'{stem}.npy')
        res = analyse(model, blur, sharp, eps)
        full_h = res.gt.spatial.shape[-2]
        row: dict[str, Any] = {'image': stem, 'fke': {}, 'division': {}}
        for c in res.fkes:
            row['fke'][c.name] = fke_scores(c, kernel, full_h, threshold)
            h, wf = c.kernel_spectrum.shape[-2:]
            size = (h, 2 * (wf - 1))
            if c.name not in row['division']:
                row['division'][c.name] = division_scores(_crop(blur, res), _crop(sharp, res), kernel, size,
                                                          full_h, threshold, eps)
                row.setdefault('identity', {})[c.name] = identity_scores(kernel, size, full_h, threshold)
        rows.append(row)
    fkes = list(rows[0]['fke'])
    per_fke = {n: _mean([r['fke'][n] for r in rows]) for n in fkes}
    div = {n: _mean([r['division'][n] for r in rows]) for n in fkes}
    ident = {n: _mean([r['identity'][n] for r in rows]) for n in fkes}
    return {'images': len(rows), 'threshold': threshold, 'fke': per_fke, 'all_fkes': _mean(list(per_fke.values())),
            'division': _mean(list(div.values())), 'division_per_fke': div,
            'identity': _mean(list(ident.values())), 'identity_per_fke': ident, 'rows': rows}


def _crop(x: Tensor, res: Any) -> Tensor:
    """The image cropped like :func:`fke_basicsr.kernels.analyse` cropped it (top-left, to the prediction's size)."""
    h, w = res.prediction.shape[-2:]
    return x[..., :h, :w] if x.dim() == 4 else x[None, :, :h, :w]



def agreement_table(trained: dict[str, Any], untrained: dict[str, Any]) -> str:
    """Plain-text table of :func:`kernel_agreement` results: untrained baseline, the model, the division ceiling."""
    lines = [f"kernel agreement over {trained['images']} images (|OTF| < {trained['threshold']}; definitions: "
             'fke_basicsr/kernel_metrics.py)',
             f"  {'FKE':<14}{'score':<11}{'untrained':>10}{'this model':>12}{'identity':>10}{'ceiling':>10}"]
    scopes = [('mean of FKEs', trained['all_fkes'], untrained['all_fkes'], trained['identity'], trained['division'])]
    scopes += [(n, trained['fke'][n], untrained['fke'][n], trained['identity_per_fke'][n],
                trained['division_per_fke'][n]) for n in trained['fke']]
    for name, t, u, i, d in scopes:
        for k in METRIC_KEYS:
            lines.append(f'  {name:<14}{k:<11}{u[k]:>10.3f}{t[k]:>12.3f}{i[k]:>10.3f}{d[k]:>10.3f}')
    return '\n'.join(lines)
