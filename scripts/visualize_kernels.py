"""Write the paper's kernel figures for one blurry image (and optionally its sharp GT): Fig. 2, Fig. 6, Fig. 8.

    python scripts/visualize_kernels.py --blur blur.png [--sharp sharp.png] --arch DeepRFTv2 --variant B \
        --weights net_g.pth -o results/kernels
    python scripts/visualize_kernels.py --arch DeepRFTv2 --weights net_g.pth --demo-root datasets/Demo/val -o out

PNGs (maps min-max normalised between their 1st and 99.9th percentiles, OpenCV's VIRIDIS colormap; spectra as
log(1 + |X|), centred):
  fig2_blur_pattern.png      σ(F⁻¹(ReLU(F(B))) − B/2) of the blurry image (beside the sharp image's, if given)
  fig6_gt_kernel.png         "ground-truth" kernel F⁻¹(F(B)/F(S)): spatial (centre crop) and spectrum  (needs --sharp)
  fig6_<fke>.png             per FKE: input feature, output feature, estimated kernel (spatial, centre crop);
                             second row: their spectra / |K|   (feature maps: channel mean; kernel: mean_c |k_c|)
  fig8_cka.png               linear CKA of each FKE's spectral features r_0..r_L with the GT kernel  (needs --sharp)
  kernels.json               the CKA values and kernel correlations
With --demo-root, the correlation between estimated and true kernels over the demo dataset is printed and saved as
demo_kernel_correlation.json (definitions in fke_basicsr/kernels.py), and the frequency-domain kernel agreement
(fke_basicsr/kernel_metrics.py) of the model beside the same network untrained (baseline) and the regularised
division (ceiling), saved as kernel_agreement.json. Tensor math: fke_basicsr.kernels.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
TILE = 192          # side of each panel cell in pixels
LABEL_H = 22


def to_u8(x, log: bool = False) -> np.ndarray:
    """(H, W) tensor/array → VIRIDIS BGR uint8, robust min-max (1st–99.9th percentile)."""
    import cv2

    a = np.asarray(x.detach().cpu().double() if hasattr(x, 'detach') else x, dtype=np.float64)
    if log:
        a = np.log1p(np.abs(a))
    lo, hi = np.percentile(a, 1.0), np.percentile(a, 99.9)
    a = np.clip((a - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(a)
    return cv2.applyColorMap((a * 255).round().astype(np.uint8), cv2.COLORMAP_VIRIDIS)


def centre_crop(x, size: int):
    """Centre crop of the last two axes to at most size × size."""
    h, w = x.shape[-2:]
    th, tw = min(size, h), min(size, w)
    top, left = h // 2 - th // 2, w // 2 - tw // 2
    return x[..., top:top + th, left:left + tw]


def panel(cells: Sequence[tuple[str, np.ndarray]], cols: int) -> np.ndarray:
    """Grid of labelled cells (each resized to TILE × TILE, nearest)."""
    import cv2

    rows = (len(cells) + cols - 1) // cols
    canvas = np.full((rows * (TILE + LABEL_H), cols * TILE, 3), 255, np.uint8)
    for i, (label, img) in enumerate(cells):
        r, c = divmod(i, cols)
        y, x = r * (TILE + LABEL_H), c * TILE
        canvas[y + LABEL_H:y + LABEL_H + TILE, x:x + TILE] = cv2.resize(img, (TILE, TILE),
                                                                        interpolation=cv2.INTER_NEAREST)
        cv2.putText(canvas, label[:30], (x + 3, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def bar_plot(groups: dict[str, dict[str, float]], title: str) -> np.ndarray:
    """Grouped bar chart drawn with OpenCV: one group per FKE, one bar per feature, values in [0, 1]."""
    import cv2

    names = list(groups)
    feats = list(next(iter(groups.values()))) if groups else []
    bar_w, gap, plot_h, left, top = 18, 26, 260, 50, 40
    width = left + len(names) * (len(feats) * bar_w + gap) + gap
    img = np.full((top + plot_h + 70, max(width, 360), 3), 255, np.uint8)
    cv2.putText(img, title, (left, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    y0 = top + plot_h
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(y0 - v * plot_h)
        cv2.line(img, (left - 4, y), (img.shape[1] - 5, y), (220, 220, 220), 1)
        cv2.putText(img, f'{v:.2f}', (5, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    palette = [tuple(int(c) for c in cv2.applyColorMap(np.uint8([[int(255 * i / max(1, len(feats) - 1))]]),
                                                        cv2.COLORMAP_VIRIDIS)[0, 0]) for i in range(len(feats))]
    x = left + gap
    for name in names:
        for j, f in enumerate(feats):
            v = float(np.clip(groups[name][f], 0, 1))
            cv2.rectangle(img, (x, int(y0 - v * plot_h)), (x + bar_w - 3, y0), palette[j], -1)
            cv2.putText(img, f, (x, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
            x += bar_w
        cv2.putText(img, name[:14], (x - len(feats) * bar_w, y0 + 34), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
        x += gap
    cv2.line(img, (left - 4, y0), (img.shape[1] - 5, y0), (0, 0, 0), 1)
    return img


def _spectrum_of(feature):
    """Centred log-magnitude spectrum of a (C, H, W) feature, channel mean."""
    from fke_basicsr.kernels import full_spectrum_magnitude
    from fke_basicsr.ops.fft import rfft2

    w = feature.shape[-1]
    return full_spectrum_magnitude(rfft2(feature.float()), w).mean(0)


def write_figures(analysis, out: Path, kernel_crop: int = 64) -> list[Path]:
    """Render an fke_basicsr.kernels.KernelAnalysis as the PNGs listed in the module docstring."""
    from fke_basicsr.infer import write_image_atomic
    from fke_basicsr.kernels import fke_kernel_map, full_spectrum_magnitude

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, img: np.ndarray) -> None:
        write_image_atomic(out / name, img)
        written.append(out / name)

    cells = [('B: blur pattern', to_u8(analysis.blur_pattern[0].mean(0)))]
    if analysis.sharp_pattern is not None:
        cells.append(('S: pattern', to_u8(analysis.sharp_pattern[0].mean(0))))
    save('fig2_blur_pattern.png', panel(cells, len(cells)))
    if analysis.gt is not None:
        gt = analysis.gt
        save('fig6_gt_kernel.png', panel([
            ('GT kernel (crop)', to_u8(centre_crop(gt.spatial[0, 0], kernel_crop))),
            ('GT |K| spectrum', to_u8(full_spectrum_magnitude(gt.spectrum[0, 0], gt.spatial.shape[-1]), log=True))],
            2))
    for cap in analysis.fkes:
        k_full = full_spectrum_magnitude(cap.kernel_effective_spectrum[0], 2 * (cap.kernel_spectrum.shape[-1] - 1))
        k_full = k_full.mean(0)
        cells = [('input feature', to_u8(cap.input_feature[0].mean(0))),
                 ('output feature', to_u8(cap.output_feature[0].mean(0))),
                 ('kernel (crop)', to_u8(centre_crop(fke_kernel_map(cap), kernel_crop))),
                 ('input spectrum', to_u8(_spectrum_of(cap.input_feature[0]), log=True)),
                 ('output spectrum', to_u8(_spectrum_of(cap.output_feature[0]), log=True)),
                 ('|K|', to_u8(k_full, log=True))]
        save(f"fig6_{cap.name.replace('.', '_')}.png", panel(cells, 3))
    if analysis.cka:
        save('fig8_cka.png', bar_plot(analysis.cka, 'linear CKA: FKE features vs GT kernel (Fourier)'))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 1)[1])
    p.add_argument('--blur', help='blurry image')
    p.add_argument('--sharp', help='its sharp ground truth (enables the GT kernel and Fig. 8)')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--opt', help='train/test YAML (network_g, path.pretrain_network_g)')
    src.add_argument('--arch', help='registered arch with FKEs (DeepRFTv2, ATD with fke, FKEAttach)')
    p.add_argument('--variant', help="DeepRFTv2 variant 'B' or 'S'")
    p.add_argument('--set', dest='sets', action='append', metavar='KEY=VALUE', help='override a network option')
    p.add_argument('--weights', help='checkpoint; without it the network is randomly initialised')
    p.add_argument('--param-key', choices=('params', 'params_ema'))
    p.add_argument('-o', '--output', required=True, help='output folder')
    p.add_argument('--crop', type=int, default=256, help='centre-crop inputs to at most this side (CPU time)')
    p.add_argument('--kernel-crop', type=int, default=64, help='side of the shown spatial-kernel crops')
    p.add_argument('--eps', type=float, default=1e-3, help='regulariser of the GT kernel division')
    p.add_argument('--demo-root', help='demo dataset split (blur/, sharp/, kernels/*.npy): report correlations')
    p.add_argument('--limit', type=int, help='at most this many demo images')
    p.add_argument('--threads', type=int, help='torch CPU threads')
    args = p.parse_args(argv)
    if not args.blur and not args.demo_root:
        p.error('give --blur (and optionally --sharp) and/or --demo-root')
    sys.path.insert(0, ROOT)
    import torch

    import fke_basicsr  # noqa: F401
    from fke_basicsr.build import load_model, parse_sets
    from fke_basicsr.infer import image_to_tensor, read_image
    from fke_basicsr.kernels import analyse, demo_kernel_correlation

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.output)
    try:
        model, _ = load_model(args.opt, args.arch, args.variant, args.weights, args.param_key, parse_sets(args.sets))
    except Exception as err:  # the message is the useful part for a script user
        print(f'error: {err}', file=sys.stderr)
        return 2
    report: dict = {}
    if args.blur:
        blur = image_to_tensor(read_image(args.blur), 3)[0]
        sharp = image_to_tensor(read_image(args.sharp), 3)[0] if args.sharp else None
        blur = centre_crop(blur, args.crop)
        sharp = centre_crop(sharp, args.crop) if sharp is not None else None
        analysis = analyse(model, blur, sharp, args.eps)
        for path in write_figures(analysis, out, args.kernel_crop):
            print(f'wrote {path}')
        report['cka'] = analysis.cka
    if args.demo_root:
        corr = demo_kernel_correlation(model, args.demo_root, args.limit, args.eps)
        report['demo_kernel_correlation'] = corr
        print(f"kernel correlation over {corr['images']} demo images (Pearson, k×k centre crop):")
        for k, v in corr['mean'].items():
            print(f'  {k:>16s}: {v:+.3f}')
        out.mkdir(parents=True, exist_ok=True)
        (out / 'demo_kernel_correlation.json').write_text(json.dumps(corr, indent=1))
        from fke_basicsr.kernel_metrics import agreement_table, kernel_agreement
        from fke_basicsr.build import build_model, network_options
        torch.manual_seed(0)  # the same network, freshly initialised (no weights): the baseline
        untrained = build_model(network_options(args.opt, args.arch, args.variant, parse_sets(args.sets)))
        agree = {'model': kernel_agreement(model, args.demo_root, args.limit, eps=args.eps),
                 'untrained': kernel_agreement(untrained, args.demo_root, args.limit, eps=args.eps)}
        print(agreement_table(agree['model'], agree['untrained']))
        (out / 'kernel_agreement.json').write_text(json.dumps(agree, indent=1))
    out.mkdir(parents=True, exist_ok=True)
    (out / 'kernels.json').write_text(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
