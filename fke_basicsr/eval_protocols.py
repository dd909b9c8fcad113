"""The paper's expected values per table cell and the protocol that produces each table (docs/evaluation.md).

Values are copied from the DeepRFTv2 paper (arXiv 2511.21132, Tables 1–7). ``expected(...)`` looks a cell up;
``PROTOCOLS`` describes, per table, the data, inference mode and metric implementation to use.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass


@dataclass(frozen=True)
class Cell:
    """One number printed in the paper."""
    table: int
    method: str
    dataset: str
    split: str
    metric: str
    value: float
    note: str = ''


@dataclass(frozen=True)
class Protocol:
    """How one table is produced (docs/evaluation.md)."""
    table: int
    title: str
    data: str
    inference: str
    metrics: str


# Default comparison tolerances: a measured cell "matches" when |measured − paper| <= tolerance.
TOLERANCES = {'PSNR': 0.02, 'PSNR_aligned': 0.02, 'PSNR_raw': 0.02, 'PSNR_Y': 0.02, 'SSIM3D': 0.001,
              'SSIM_aligned': 0.001, 'SSIM_raw': 0.001, 'SSIM_sk': 0.001, 'SSIM_Y': 0.0003, 'MAE': 0.001,
              'LPIPS_alex': 0.001, 'GMACs@256': 0.01, 'TrainMemMB@256': 0.05, 'ParamsM': 0.01}
RELATIVE_TOLERANCE = {'GMACs@256', 'TrainMemMB@256', 'ParamsM'}  # tolerances above are fractions for these

PROTOCOLS = {
    1: Protocol(1, 'GoPro / HIDE (trained on GoPro)',
                'GoPro test 1,111 pairs (`blur`, not `blur_gamma`); HIDE test 2,025 pairs (close-ups + long-shot)',
                'whole 1280×720 frame, model-internal tiling 512×512 with overlap 128; clamp, uint8 (round half even)',
                'PSNR: P-RGB-u8; SSIM: S-3D (MATLAB ssim on the RGB array); mean over images'),
    2: Protocol(2, 'RealBlur-R / RealBlur-J (separate models)',
                'RealBlur-{R,J} test 980 pairs each (official test lists)',
                'zero-pad bottom/right to 776×680, whole frame (no tiling), crop back; clamp, uint8',
                'aligned: gain + ECC homography, masked PSNR / masked Gaussian SSIM (5-px crop); '
                'not aligned: P-RGB-u8 PSNR, S-3D SSIM (not verified against the original evaluation code)'),
    3: Protocol(3, 'REDS-val-300 (NTIRE 2021 track 2, JPEG artifacts)',
                'frames ...9 of the 30 val clips (300 pairs), blur_jpeg inputs, sharp PNG targets',
                'model-internal tiling 512 / overlap 128; clamp, uint8', 'as Table 1 (P-RGB-u8, S-3D)'),
    4: Protocol(4, 'DPDD single-image defocus deblurring (DeepRFTv2-S)',
                'DPDD test_c 76 pairs = 37 indoor + 39 outdoor, 8-bit (high byte of the 16-bit PNGs)',
                'full image, no tiling; clamp [0,1], NOT quantised',
                'P-float PSNR, skimage default SSIM, MAE, LPIPS AlexNet v0.1; combined = mean over all 76'),
    5: Protocol(5, 'Lightweight SR ×2/×3/×4 (ATD-light ± FKE)', 'Set5, Set14, B100, Urban100, Manga109',
                'full LR image; uint8 via tensor2img', 'Y channel (BT.601), crop_border = scale'),
    6: Protocol(6, 'Ablation: architecture components (GoPro, 200k iterations)', 'GoPro test 1,111',
                'as Table 1', 'as Table 1; FLOPs = conv/linear MACs at 256×256'),
    7: Protocol(7, 'Ablation: Fourier Kernel Estimator (GoPro, 200k iterations)', 'GoPro test 1,111',
                'as Table 1', 'as Table 1'),
}

_T1 = [  # method, GoPro PSNR, SSIM, HIDE PSNR, SSIM, GMACs, train memory MB
    ('DeepDeblur', 29.08, 0.914, 25.73, 0.874, 336, None), ('MPRNet', 32.66, 0.959, 30.96, 0.939, 777, 6294),
    ('DeepRFT', 33.52, 0.965, 31.66, 0.946, 187, 3569), ('NAFNet', 33.69, 0.967, 31.32, 0.943, 64, 2972),
    ('Restormer', 32.92, 0.961, 31.22, 0.942, 141, 12520), ('MRLPFNet', 34.01, 0.968, 31.63, 0.947, 129, None),
    ('ALGNet', 34.05, 0.969, 31.68, 0.952, None, None), ('LoFormer', 34.09, 0.969, 31.86, 0.949, 126, 6212),
    ('FFTformer', 34.21, 0.968, 31.62, 0.946, 132, 19800), ('MISCFilter', 34.10, 0.969, 31.66, 0.946, None, None),
    ('MDT', 34.26, 0.969, 31.84, 0.948, 113, None), ('UFPNet', 34.06, 0.968, 31.74, 0.947, 243, 8164),
    ('PGDN', 34.17, 0.950, None, None, None, None), ('DeepRFTv2-B', 34.52, 0.971, 32.22, 0.953, 120, 3439),
]
_T2 = [  # method, R PSNR, R SSIM, J PSNR, J SSIM, aligned?
    ('SegDeblur', 40.79, 0.976, 33.51, 0.938, True), ('AdaRevD', 41.09, 0.978, 33.84, 0.943, True),
    ('FFTformer', 40.11, 0.975, 32.62, 0.933, True), ('LoFormer', 40.50, 0.975, 32.88, 0.935, True),
    ('UFPNet', 40.61, 0.974, 33.35, 0.934, True), ('EVSSM', 41.27, 0.978, 34.34, 0.946, True),
    ('DeepRFTv2-B', 41.39, 0.977, 34.46, 0.945, True),
    ('FFTformer', 37.32, 0.966, 29.97, 0.922, False), ('LoFormer', 37.67, 0.968, 30.04, 0.924, False),
    ('UFPNet', 38.14, 0.971, 30.82, 0.929, False), ('EVSSM', 37.82, 0.970, 30.68, 0.929, False),
    ('DeepRFTv2-B', 38.26, 0.971, 31.10, 0.933, False),
]
_T3 = [  # method, PSNR, SSIM, GMACs, params (M)
    ('MPRNet', 28.79, 0.811, 777, 20.1), ('HINet', 28.83, 0.862, 171, 88.7), ('MAXIM', 28.93, 0.865, 339, 22.2),
    ('NAFNet', 29.09, 0.867, 64, 65.0), ('LoFormer', 29.20, 0.869, 73, 27.9), ('DeepRFTv2-B', 29.42, 0.872, 120, 30.1),
]
_T4 = [  # method, indoor (PSNR SSIM MAE LPIPS), outdoor (...), combined (...)
    ('EBDB', 25.77, 0.772, 0.040, 0.297, 21.25, 0.599, 0.058, 0.373, 23.45, 0.683, 0.049, 0.336),
    ('DMENet', 25.50, 0.788, 0.038, 0.298, 21.43, 0.644, 0.063, 0.397, 23.41, 0.714, 0.051, 0.349),
    ('JNB', 26.73, 0.828, 0.031, 0.273, 21.10, 0.608, 0.064, 0.355, 23.84, 0.715, 0.048, 0.315),
    ('DPDNet', 26.54, 0.816, 0.031, 0.239, 22.25, 0.682, 0.056, 0.313, 24.34, 0.747, 0.044, 0.277),
    ('KPAC', 27.97, 0.852, 0.026, 0.182, 22.62, 0.701, 0.053, 0.269, 25.22, 0.774, 0.040, 0.227),
    ('IFAN', 28.11, 0.861, 0.026, 0.179, 22.76, 0.720, 0.052, 0.254, 25.37, 0.789, 0.039, 0.217),
    ('ConvIR', 29.37, 0.887, 0.023, 0.143, 23.51, 0.757, 0.049, 0.203, 26.36, 0.820, 0.036, 0.174),
    ('ALGNet', 29.37, 0.888, 0.023, 0.147, 23.68, 0.755, 0.048, 0.223, 26.45, 0.821, 0.036, 0.186),
    ('FDIKP', None, None, None, None, None, None, None, None, 26.42, 0.813, None, 0.185),
    ('DeepRFTv2-S', 29.50, 0.890, 0.023, 0.134, 23.73, 0.766, 0.048, 0.192, 26.54, 0.827, 0.036, 0.164),
]
_T5_CSV = """method,scale,set,psnr,ssim
ATD-light,x2,Set5,38.28,0.9616
ATD-light,x2,Set14,34.11,0.9217
ATD-light,x2,B100,32.39,0.9023
ATD-light,x2,Urban100,33.27,0.9376
ATD-light,x2,Manga109,39.51,0.9789
ATD-light+FKE,x2,Set5,38.27,0.9618
ATD-light+FKE,x2,Set14,34.26,0.9229
ATD-light+FKE,x2,B100,32.41,0.9030
ATD-light+FKE,x2,Urban100,33.55,0.9405
ATD-light+FKE,x2,Manga109,39.63,0.9793
ATD-light,x3,Set5,34.70,0.9300
ATD-light,x3,Set14,30.68,0.8485
ATD-light,x3,B100,29.32,0.8109
ATD-light,x3,Urban100,29.16,0.8710
ATD-light,x3,Manga109,34.60,0.9505
ATD-light+FKE,x3,Set5,34.71,0.9298
ATD-light+FKE,x3,Set14,30.73,0.8497
ATD-light+FKE,x3,B100,29.35,0.8120
ATD-light+FKE,x3,Urban100,29.36,0.8753
ATD-light+FKE,x3,Manga109,34.69,0.9513
ATD-light,x4,Set5,32.62,0.8997
ATD-light,x4,Set14,28.87,0.7884
ATD-light,x4,B100,27.77,0.7439
ATD-light,x4,Urban100,26.97,0.8107
ATD-light,x4,Manga109,31.47,0.9198
ATD-light+FKE,x4,Set5,32.62,0.8991
ATD-light+FKE,x4,Set14,28.93,0.7902
ATD-light+FKE,x4,B100,27.80,0.7451
ATD-light+FKE,x4,Urban100,27.12,0.8163
ATD-light+FKE,x4,Manga109,31.54,0.9210
"""
# Table 6: row -> (reading of the garbled row: UNet block | FKE block | architecture num×dim, PSNR, GMACs).
# The row readings are the ablation issue's to settle; the numbers are unambiguous in the paper text.
TABLE6_ROWS = {
    'row01': ('NAF | no FKE | UNet 1×56', 33.00, 34.93), 'row02': ('NAF | no FKE | MIMO 1×56', 32.95, 36.42),
    'row03': ('NAF | no FKE | DMS 1×48', 33.32, 33.40), 'row04': ('NAF | no FKE | UNet 1×48', 32.74, 25.81),
    'row05': ('NAF | Res | UNet 1×48', 33.06, 32.32), 'row06': ('NAF | NAF | UNet 1×48', 33.10, 28.82),
    'row07': ('NAF | VS | UNet 1×48', 33.11, 28.84), 'row08': ('NAF | NAF ×2 blocks | UNet 1×48', 33.11, 30.82),
    'row09': ('NAF | VS ×2 blocks | UNet 1×48', 33.17, 30.86), 'row10': ('NAF | VS | DMS 1×48', 33.62, 37.18),
    'row11': ('NAF | no FKE | DMS 2×48', 33.66, 67.19), 'row12': ('NAF+VS | VS | DMS 1×48', 33.84, 59.67),
    'row13': ('NAF | VS | DMS 1×48 (large single UNet)', 33.90, 70.26),
    'row14': ('NAF | VS | DMS 2×48 (DeepRFTv2-S)', 34.10, 75.34),
    'row15': ('NAF+VS | VS | DMS 2×48 (DeepRFTv2-B)', 34.34, 120.3),
}
TABLE6_MEMORY = {  # NAF+VS | VS | DMS, num, reversible -> training memory (MB) for one 256×256 patch
    'mem1_norev': ('DMS 1×48, not reversible', 6120), 'mem2_norev': ('DMS 2×48, not reversible', 12027),
    'mem1_rev': ('DMS 1×48, reversible', 3416), 'mem2_rev': ('DMS 2×48, reversible', 3439),
}
# Table 7: rows 1–3 and 8–10 are stated in the text; rows 4–7 (FKE input B / Ŝ / e1, ⊕ addition) print the
# values 32.84, 32.72, 32.90 in a garbled order and one value is missing, so those cells carry no number.
TABLE7_ROWS = {
    'row01': ('no kernel estimator', 32.74), 'row02': ('Spatial kernels, input d1', 32.72),
    'row03': ('Fourier, no activation, input d1', 32.74), 'row04': ('Fourier + Act, input B', None),
    # rows 5-7: values placed from the garbled extraction; the same reading as fke_basicsr/ablation.py (docs/ablation.md)
    'row05': ('Fourier + Act, input Ŝ (uncertain reading)', 32.84),
    'row06': ('Fourier + Act, input e1 (uncertain reading)', 32.72),
    'row07': ('Fourier ⊕ addition + Act, input d1 (uncertain reading)', 32.90), 'row08': ('Fourier + Act, input d1', 33.06),
    'row09': ('DeepRFTv2 FKE without skip', 34.04), 'row10': ('DeepRFTv2 FKE with skip', 34.10),
}


def _build() -> tuple[Cell, ...]:
    cells: list[Cell] = []

    def add(table, method, dataset, split, metric, value, note=''):
        if value is not None:
            cells.append(Cell(table, method, dataset, split, metric, float(value), note))

    for m, gp, gs, hp, hs, macs, mem in _T1:
        add(1, m, 'GoPro', 'test', 'PSNR', gp), add(1, m, 'GoPro', 'test', 'SSIM3D', gs)
        add(1, m, 'HIDE', 'test', 'PSNR', hp), add(1, m, 'HIDE', 'test', 'SSIM3D', hs)
        add(1, m, '-', '-', 'GMACs@256', macs), add(1, m, '-', '-', 'TrainMemMB@256', mem)
    for m, rp, rs, jp, js, aligned in _T2:
        kind = 'aligned' if aligned else 'raw'
        add(2, m, 'RealBlur-R', 'test', f'PSNR_{kind}', rp), add(2, m, 'RealBlur-R', 'test', f'SSIM_{kind}', rs)
        add(2, m, 'RealBlur-J', 'test', f'PSNR_{kind}', jp), add(2, m, 'RealBlur-J', 'test', f'SSIM_{kind}', js)
    for m, p, s, macs, params in _T3:
        add(3, m, 'REDS', 'val300', 'PSNR', p), add(3, m, 'REDS', 'val300', 'SSIM3D', s)
        add(3, m, '-', '-', 'GMACs@256', macs), add(3, m, '-', '-', 'ParamsM', params)
    for m, *vals in _T4:
        for i, split in enumerate(('indoor', 'outdoor', 'combined')):
            for j, metric in enumerate(('PSNR', 'SSIM_sk', 'MAE', 'LPIPS_alex')):
                add(4, m, 'DPDD', split, metric, vals[4 * i + j])
    for row in csv.DictReader(io.StringIO(_T5_CSV)):
        add(5, row['method'], row['set'], row['scale'], 'PSNR_Y', row['psnr'])
        add(5, row['method'], row['set'], row['scale'], 'SSIM_Y', row['ssim'])
    for key, (desc, psnr, macs) in TABLE6_ROWS.items():
        add(6, key, 'GoPro', 'test', 'PSNR', psnr, desc), add(6, key, '-', '-', 'GMACs@256', macs, desc)
    for key, (desc, mem) in TABLE6_MEMORY.items():
        add(6, key, '-', '-', 'TrainMemMB@256', mem, desc)
    for key, (desc, psnr) in TABLE7_ROWS.items():
        add(7, key, 'GoPro', 'test', 'PSNR', psnr, desc)
    return tuple(cells)


EXPECTED: tuple[Cell, ...] = _build()


def expected(table: int, method: str, dataset: str, split: str, metric: str) -> float | None:
    """The paper's value of one cell, or None when the paper prints none."""
    for c in EXPECTED:
        if (c.table, c.method, c.dataset, c.split, c.metric) == (table, method, dataset, split, metric):
            return c.value
    return None


def within_tolerance(metric: str, measured: float, paper: float) -> bool:
    """|measured − paper| within the metric's default tolerance (relative for MACs / memory / params)."""
    tol = TOLERANCES.get(metric, 0.0)
    if metric in RELATIVE_TOLERANCE:
        tol *= abs(paper)
    return abs(measured - paper) <= tol


def expected_csv() -> str:
    """All expected cells as a long CSV (table,method,dataset,split,metric,value,source)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator='\n')
    w.writerow(['table', 'method', 'dataset', 'split', 'metric', 'value', 'source'])
    for c in EXPECTED:
        w.writerow([c.table, c.method, c.dataset, c.split, c.metric, c.value, f'DeepRFTv2 T{c.table}'])
    return out.getvalue()
