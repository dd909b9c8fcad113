"""The rows of the paper's ablation study (paper §5, Tables 6 and 7) as data: network options + the paper's numbers.

Used by scripts/make_ablation_options.py (options/train/Ablation/*.yml), scripts/check_ablation_flops.py and
scripts/reproduce_tables.py. The text of both tables is garbled in the paper's extraction; each row's reading
(and why) is in :attr:`AblationRow.reading` and docs/ablation.md. Table 6 readings are confirmed by the FLOPs
column (every row within 0.5 % of the paper, ptflops' PyTorch-module convention at 256×256).

Rows whose network needs an option DeepRFTv2 does not have (MIMO-UNet, the Table 7 FKE variants) use the
registered subclass ``DeepRFTv2Ablation`` (fke_basicsr/archs/ablation_variants.py); all others use DeepRFTv2.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = ['AblationRow', 'TABLE6', 'TABLE7', 'ROWS', 'row', 'network_options', 'TRAIN_SAVE_MEMORY']

# Reversible flags of every trainable row: the authors' GoPro recipe (docs/architecture.md), truncated to the
# row's number of columns by DeepRFTv2; they change memory only, never the function.
TRAIN_SAVE_MEMORY: dict[str, list[bool]] = dict(save_memory_encoder=[False, True],
                                                save_memory_decoder=[False, True],
                                                save_memory_fke=[True, True])
_ALL_REVERSIBLE = dict(save_memory_encoder=True, save_memory_decoder=True, save_memory_fke=True)
_NOT_REVERSIBLE = dict(save_memory_encoder=False, save_memory_decoder=False, save_memory_fke=False)


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 6 or 7: where it is, what the paper reports, how we read it, the network it trains."""
    table: int
    row: int
    name: str                       # file-name stem after "Table<t>_row<nn>_"
    reading: str                    # the configuration as we read it from the garbled table, and why
    network: dict[str, Any]         # network_g options (with `type`), reversible flags excluded
    psnr: float | None = None       # GoPro test PSNR (dB); None where the paper's cell is lost
    gflops: float | None = None     # Table 6 "FLOPs" (G) = ptflops MACs at 1×3×256×256
    memory_mb: int | None = None    # Table 6 training memory for one 256×256 patch
    reversible: bool | None = None  # memory rows: all save_memory flags on / off
    same_as: str | None = None      # another row with the identical network (e.g. 'T6-04')
    note: str = ''

    @property
    def key(self) -> str:
        """'T6-04'."""
        return f'T{self.table}-{self.row:02d}'

    @property
    def stem(self) -> str:
        """Options file stem, e.g. 'Table6_row03_DMS-UNet_NAF'."""
        return f'Table{self.table}_row{self.row:02d}_{self.name}'

    @property
    def certain(self) -> bool:
        """The configuration is pinned down independently of our reading: -S / -B (rows 14/15 = the authors'
        code, 75.33 / 120.30 G with ptflops) and the NAF DMS-UNet without FKE (row 3, stated in paper §5.1)."""
        return self.table == 6 and self.row in (3, 14, 15)


def _net(arch: str = 'DeepRFTv2', variant: str | None = None, **options: Any) -> dict[str, Any]:
    return {'type': arch, 'variant': variant, **options}


_UNET = dict(mid_scale=False)                 # Fig. 3 (b), Eq. 4: one full-resolution encoder-decoder
_MIMO = dict(mid_scale=False, mimo=True)      # Fig. 3 (c), Eq. 5: pyramid inputs at every level, outputs per scale
_DMS = dict(mid_scale=True)                   # Fig. 3 (d), Eqs. 9-11: decoupled max + mid sub-UNets
_ONE = dict(num_columns=1)
_X2 = dict(enc_blocks=[2, 8, 16], dec_blocks=[16, 8, 2])   # "✓: the quantity of basic block is doubled"

TABLE6: tuple[AblationRow, ...] = (
    AblationRow(6, 1, 'OneScaleUNet_NAF_dim56',
                'One-Scale UNet (Fig. 3 b), NAFBlocks, no FKE, 1 UNet, width 56 (FLOPs 34.95 vs 34.93)',
                _net(**_ONE, **_UNET, width=56, fke=False), 33.00, 34.93),
    AblationRow(6, 2, 'MIMO-UNet_NAF_dim56',
                'MIMO-UNet (Fig. 3 c, the authors\' multiscale_enc): B1/B2/B3 embedded (3x3 conv) and fused by '
                'concat + 1x1 conv at encoder levels 1/2/3, images also predicted at 1/2 and 1/4; NAF, no FKE, '
                'width 56. The +1.49 G over row 1 is exactly those convs (36.43 vs 36.42)',
                _net('DeepRFTv2Ablation', **_ONE, **_MIMO, width=56, fke=False), 32.95, 36.42),
    AblationRow(6, 3, 'DMS-UNet_NAF',
                'DMS-UNet (Fig. 3 d) with NAFBlocks, no FKE, 1 DMS-UNet, width 48 (stated in paper §5.1; 33.42 vs 33.40)',
                _net(**_ONE, **_DMS, fke=False), 33.32, 33.40),
    AblationRow(6, 4, 'OneScaleUNet_NAF',
                'One-Scale UNet, NAF, no FKE, width 48: the baseline of the block study (rows 4-9) and of Table 7',
                _net(**_ONE, **_UNET, fke=False), 32.74, 25.81),
    AblationRow(6, 5, 'OneScaleUNet_NAF_FKE-Res',
                'row 4 + FKE whose residual module is a ResBlock (conv3x3-ReLU-conv3x3), 4 blocks; = Table 7 row 8',
                _net(**_ONE, **_UNET, fke_block='ResBlock'), 33.06, 32.32),
    AblationRow(6, 6, 'OneScaleUNet_NAF_FKE-NAF',
                'row 4 + FKE with NAFBlocks, 4 blocks', _net(**_ONE, **_UNET, fke_block='naf'), 33.10, 28.82),
    AblationRow(6, 7, 'OneScaleUNet_NAF_FKE-VS',
                'row 4 + FKE with the VS module of DeepRFTv2\'s FKE (EVSS = x + SS2D(LN x)), 4 blocks. EVSS, not '
                'the VSBlock with FFN: EVSS gives 28.90 G, VSBlock 29.85 G vs the paper\'s 28.84',
                _net(**_ONE, **_UNET, fke_block='EVSS'), 33.11, 28.84),
    AblationRow(6, 8, 'OneScaleUNet_NAF_FKE-NAFx2',
                'row 6 with the FKE blocks doubled (8 levels; +2.0 G as in the paper)',
                _net(**_ONE, **_UNET, fke_block='naf', fke_levels=8), 33.11, 30.82),
    AblationRow(6, 9, 'OneScaleUNet_NAF_FKE-VSx2',
                'row 7 with the FKE blocks doubled (8 levels)',
                _net(**_ONE, **_UNET, fke_block='EVSS', fke_levels=8), 33.17, 30.86),
    AblationRow(6, 10, 'DMS-UNet_NAF_FKE-VS',
                'row 3 + FKE (EVSS) at both scales: one column of DeepRFTv2-S (37.29 vs 37.18)',
                _net(**_ONE, **_DMS), 33.62, 37.18),
    AblationRow(6, 11, 'DMS-UNet_NAF_num2',
                'two DMS-UNets (columns), NAF, no FKE (the model "without FKE" of paper §5.2; 67.23 vs 67.19)',
                _net(**_DMS, num_columns=2, fke=False), 33.66, 67.19),
    AblationRow(6, 12, 'DMS-UNet_NAFEVS_FKE-VS',
                'one column of DeepRFTv2-B: NAF + VS (= NAFEVSBlock at max-scale levels 2-3), FKE EVSS '
                '(59.77 vs 59.67)', _net(variant='B', **_ONE), 33.84, 59.67),
    AblationRow(6, 13, 'DMS-UNet_NAFx2_FKE-VSx2',
                '"single large UNet" (paper §5.1): row 10 with every block count doubled, UNet [2,8,16]/[16,8,2] and FKE '
                '8 levels (70.38 vs 70.26; doubling only the UNet gives 67.85, -3.4 %)',
                _net(**_ONE, **_DMS, **_X2, fke_levels=8), 33.90, 70.26),
    AblationRow(6, 14, 'DMS-UNet_NAF_FKE-VS_num2',
                'DeepRFTv2-S (two DMS-UNets, NAF, FKE EVSS); the authors\' code gives 75.33 G with ptflops',
                _net(variant='S'), 34.10, 75.34),
    AblationRow(6, 15, 'DMS-UNet_NAFEVS_FKE-VS_num2',
                'DeepRFTv2-B; the authors\' code gives 120.30 G with ptflops', _net(variant='B'), 34.34, 120.3),
    AblationRow(6, 16, 'memory_DeepRFTv2-B_num1_noRev',
                'memory row: row 12 (one -B column) with every reversible flag off',
                _net(variant='B', **_ONE), memory_mb=6120, reversible=False, same_as='T6-12'),
    AblationRow(6, 17, 'memory_DeepRFTv2-B_num2_noRev',
                'memory row: DeepRFTv2-B (row 15) with every reversible flag off',
                _net(variant='B'), memory_mb=12027, reversible=False, same_as='T6-15'),
    AblationRow(6, 18, 'memory_DeepRFTv2-B_num1_Rev',
                'memory row: row 12 with every reversible flag on (column 0 included: 3,416 < 6,120 MB needs it)',
                _net(variant='B', **_ONE), memory_mb=3416, reversible=True, same_as='T6-12'),
    AblationRow(6, 19, 'memory_DeepRFTv2-B_num2_Rev',
                'memory row: DeepRFTv2-B with every reversible flag on',
                _net(variant='B'), memory_mb=3439, reversible=True, same_as='T6-15'),
)

# Table 7 rows 1-8 vary the FKE of Table 6 row 5 (One-Scale NAF UNet + ResBlock FKE): row 1 = Table 6 row 4
# (32.74 both) and row 8 = Table 6 row 5 (33.06 both). Rows 9-10 are DeepRFTv2-S without / with the skip.
_T7_BASE = dict(**_ONE, **_UNET, fke_block='ResBlock')
TABLE7: tuple[AblationRow, ...] = (
    AblationRow(7, 1, 'noFKE', 'no kernel estimator: Table 6 row 4',
                _net(**_ONE, **_UNET, fke=False), 32.74, same_as='T6-04'),
    AblationRow(7, 2, 'Spatial_d1',
                'kernels estimated in the spatial domain (column on the spatial map, real HxW kernel k), then '
                'convolved with the feature (irfft2(Y * rfft2(k)) = circular convolution); ReLU kept',
                _net('DeepRFTv2Ablation', **_T7_BASE, fke_domain='spatial'), 32.72),
    AblationRow(7, 3, 'Fourier_noAct_d1',
                'Fourier space without the activation: the ResBlocks\' ReLU removed (identity), so K is a '
                'normalised linear map of the spectrum',
                _net('DeepRFTv2Ablation', **_T7_BASE, fke_act=False), 32.74),
    AblationRow(7, 4, 'Fourier_Act_inputB',
                'kernel estimated from the blurry image B of that scale (the authors\' inp_feature "inp"), applied '
                'to d1. The PSNR cell of this row is lost in the paper\'s text (9 values for 10 rows)',
                _net('DeepRFTv2Ablation', **_T7_BASE, fke_input='B'), None,
                note='paper PSNR lost in extraction'),
    AblationRow(7, 5, 'Fourier_Act_inputS',
                'kernel estimated from the latent sharp image S = head(d1) + B (inp_feature "latentsharp"); '
                'applied to d1. 32.84 dB: the garbled line carries "Ŝ ✓" with the value 32.84',
                _net('DeepRFTv2Ablation', **_T7_BASE, fke_input='S'), 32.84,
                note='PSNR assignment read from the garbled table (uncertain)'),
    AblationRow(7, 6, 'Fourier_Act_inputE1',
                'kernel estimated from the encoder feature e1 (level-1 encoder output), applied to d1. 32.72 dB: '
                'the second value of the "Ŝ" line, whose B and Ŝ cells are ×',
                _net('DeepRFTv2Ablation', **_T7_BASE, fke_input='e1'), 32.72,
                note='PSNR assignment read from the garbled table (uncertain)'),
    AblationRow(7, 7, 'FourierAdd_Act_d1',
                'the product in Fourier space replaced by an addition (irfft2(Y + K), DeepRFT-like); 32.90 dB: the '
                'value on the line holding the ⊕ cell', _net('DeepRFTv2Ablation', **_T7_BASE, fke_combine='add'),
                32.90, note='PSNR assignment read from the garbled table (uncertain)'),
    AblationRow(7, 8, 'Fourier_Act_d1',
                'the proposed FKE (Fourier, ReLU, input d1) on the One-Scale UNet: Table 6 row 5 ("8th row", paper §5.2)',
                _net(**_T7_BASE), 33.06, same_as='T6-05'),
    AblationRow(7, 9, 'DeepRFTv2-S_noSkip',
                'DeepRFTv2-S without the FKE skip: the second column\'s sub-ResNet no longer fuses the first '
                'column\'s next-level state r_{i+1} (1x1 convs removed); the alpha-scaled same-level state, which '
                'makes the column reversible, is kept', _net('DeepRFTv2Ablation', 'S', fke_cross_skip=False), 34.04),
    AblationRow(7, 10, 'DeepRFTv2-S_Skip', 'DeepRFTv2-S: Table 6 row 14', _net(variant='S'), 34.10,
                same_as='T6-14'),
)

ROWS: dict[str, AblationRow] = {r.key: r for r in TABLE6 + TABLE7}


def row(key: str) -> AblationRow:
    """The row 'T6-04' / 'T7-10' (ValueError naming the known keys otherwise)."""
    if key not in ROWS:
        raise ValueError(f'key: expected one of {list(ROWS)}, got {key!r}')
    return ROWS[key]


def network_options(r: AblationRow, reversible: bool | None = None) -> dict[str, Any]:
    """network_g of a row with its reversible flags: the row's own (memory rows), else ``reversible`` (True / False
    = all on / off), else the GoPro training recipe's :data:`TRAIN_SAVE_MEMORY`. A fresh copy."""
    flag = r.reversible if r.reversible is not None else reversible
    flags = TRAIN_SAVE_MEMORY if flag is None else (_ALL_REVERSIBLE if flag else _NOT_REVERSIBLE)
    return {**copy.deepcopy(r.network), **copy.deepcopy(flags)}


def row_macs(r: AblationRow, size: int = 256, extrapolate_from: tuple[int, int] | None = None) -> dict[str, float]:
    """MACs of a row's network for one size×size image, in both of fke_basicsr.profile's conventions:
    {'ptflops': ..., 'conv_linear': ..., 'params': ...}.

    ``extrapolate_from=(s1, s2)`` counts at two small sizes and extrapolates ``a·s² + b`` to ``size`` (the
    constant b is the per-image cost of the SCA 1×1 convs on pooled maps; FFTs and scans are never counted),
    which agrees with the direct count to ~0.05 % at a fraction of the CPU time.
    """
    import torch

    from fke_basicsr.build import build_model
    from fke_basicsr.profile import count_macs

    model = build_model(network_options(r))
    params = float(sum(p.numel() for p in model.parameters()))

    def count(s: int) -> tuple[float, float]:
        rep = count_macs(model, torch.rand(1, 3, s, s, generator=torch.Generator().manual_seed(0)))
        return float(rep.macs_ptflops), float(rep.macs_conv_linear)

    if extrapolate_from is None:
        pt, cl = count(size)
    else:
        s1, s2 = extrapolate_from
        if not 0 < s1 < s2:
            raise ValueError(f'extrapolate_from: expected two increasing sizes, got {extrapolate_from!r}')
        (p1, c1), (p2, c2) = count(s1), count(s2)
        k = (size ** 2 - s2 ** 2) / (s2 ** 2 - s1 ** 2)
        pt, cl = p2 + k * (p2 - p1), c2 + k * (c2 - c1)
    return {'ptflops': pt, 'conv_linear': cl, 'params': params}
