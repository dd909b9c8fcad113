"""Reproduce the DeepRFTv2 paper's deblurring tables from checkpoints, with each table's own protocol
(docs/evaluation.md): writes every table as Markdown and CSV with the paper's value, the measured
value and their difference side by side.

    python scripts/reproduce_tables.py --data-root datasets --out results/tables \
        --ckpt gopro=GoPro-B.pth --ckpt realblur_r=RB-R.pth --ckpt realblur_j=RB-J.pth --ckpt reds=REDS-B.pth \
        --ckpt dpdd=DPDD-S.pth --lpips-alexnet alexnet-owt-7be5be79.pth [--limit 20] [--device cuda]

Tables: 1 GoPro/HIDE (tiling 512/128, uint8, PSNR + MATLAB SSIM, params/MACs), 2 RealBlur-R/-J (zero pad to
776×680, aligned and not aligned), 3 REDS val-300, 4 DPDD (float output, PSNR/SSIM/MAE/LPIPS, indoor/outdoor/
combined), 6/7 ablations (``--ablation T6:row14=net.yml,ckpt.pth``; GoPro, Table 1 protocol). A table whose
checkpoint is not given is listed as skipped. Other tables (e.g. Table 5, SR) plug in with ``@register_table``
from a module named by ``--plugin``. Datasets are read in the layouts written by scripts/data_preparation/.
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'scripts' / 'data_preparation'))

import fke_basicsr  # noqa: E402,F401  (compat shims + registration before basicsr)

from fke_basicsr import eval_protocols as ep  # noqa: E402
from fke_basicsr.build import build_model  # noqa: E402
from fke_basicsr.checkpoints import load_checkpoint, safe_load  # noqa: E402
from fke_basicsr.io_utils import OneLineParser, run_cli  # noqa: E402
from fke_basicsr.metrics import dpdd_metric, realblur_metric  # noqa: E402
from fke_basicsr.metrics.metric_util import Aggregate, mean_of_images  # noqa: E402
from fke_basicsr.metrics.psnr_metric import calculate_psnr_rgb  # noqa: E402
from fke_basicsr.metrics.ssim_metric import calculate_ssim_matlab  # noqa: E402
from fke_basicsr.protocol import TestTimeProtocol, check_network_options  # noqa: E402
from prep_common import list_images, pair_by_stem  # noqa: E402

# Default networks per checkpoint key, each with its test-time protocol under 'val' (the options files'
# val: section, docs/evaluation.md); --net KEY=... overrides.
_TILES_512 = {'tile': {'size': 512, 'overlap': 128}}  # GoPro/HIDE/REDS: 512x512 tiles, overlap 128, blended
DEFAULT_NETS = {
    'gopro': {'type': 'DeepRFTv2', 'variant': 'B', 'val': _TILES_512},
    'reds': {'type': 'DeepRFTv2', 'variant': 'B', 'val': _TILES_512},
    'realblur_r': {'type': 'DeepRFTv2', 'variant': 'B', 'val': {}},
    'realblur_j': {'type': 'DeepRFTv2', 'variant': 'B', 'val': {}},
    'dpdd': {'type': 'DeepRFTv2', 'variant': 'S', 'fke_window': {'size': 320, 'overlap': 48}, 'val': {}},  # as the DPDD options
    # Table 5: ATD-light ± FKE (options/test/SR); the FKE models evaluate with 64-tiles as the authors, the
    # plain ones as the original ATD (mirror padding to the window)
    **{f'sr{"_fke" if fke else ""}_x{s}': {
        'type': 'ATD', 'upscale': s, 'fke': fke,
        'val': {'tile': {'size': 64, 'overlap': 16, 'batch': 16}} if fke else {'size_multiple': 16,
                                                                              'pad_mode': 'symmetric'}}
       for s in (2, 3, 4) for fke in (False, True)},
}
SR_SETS = (('Set5', 'Set5'), ('Set14', 'Set14'), ('BSD100', 'B100'), ('Urban100', 'Urban100'),
           ('Manga109', 'Manga109'))  # (folder written by prepare_sr_benchmarks.py, the paper's column name)
REALBLUR_PAD = (776, 680)  # H×W every RealBlur frame is zero-padded to (bottom/right), as in training


@dataclass
class Cell:
    """One measured table cell next to the paper's value."""
    table: int
    method: str
    dataset: str
    split: str
    metric: str
    value: float
    paper: float | None
    n_images: int
    protocol: str
    note: str = ''

    @property
    def delta(self) -> float | None:
        return None if self.paper is None or not math.isfinite(self.value) else self.value - self.paper


@dataclass
class Context:
    """Everything a table builder needs."""
    data_root: Path
    ckpts: dict[str, Path]
    nets: dict[str, dict]
    device: str
    limit: int | None
    lpips_alexnet: str | None
    ablations: dict[str, tuple[dict, Path]] = field(default_factory=dict)
    complexity: bool = True
    realblur_pad: tuple[int, int] = REALBLUR_PAD
    complexity_size: int = 256
    log: Callable[[str], None] = print


TABLE_BUILDERS: dict[int, Callable[[Context], tuple[list[Cell], list[str]]]] = {}


def register_table(number: int):
    """Register ``fn(ctx) -> (cells, notes)`` as the builder of table ``number`` (Table 5 plugs in this way)."""
    def deco(fn):
        TABLE_BUILDERS[number] = fn
        return fn
    return deco


# ------------------------------------------------------------------------------------------- helpers
def network_options(spec: str) -> dict:
    """Network options from a YAML file (its ``network_g`` and ``val``) or an inline JSON object (the network's
    options, its protocol under an optional ``"val"`` key)."""
    p = Path(spec)
    if p.is_file():
        full = yaml.safe_load(p.read_text())
        opt = full.get('network_g', full)
        if 'network_g' in full:
            opt = {**opt, 'val': {k: v for k, v in (full.get('val') or {}).items()
                                  if k in ('tile', 'size_multiple', 'pad_mode')}}
    else:
        try:
            opt = json.loads(spec)
        except json.JSONDecodeError as err:
            raise ValueError(f'--net: expected a YAML file or a JSON object, got {spec!r}') from err
    if not isinstance(opt, dict) or 'type' not in opt:
        raise ValueError(f'--net: network options need a "type" (e.g. DeepRFTv2), got {opt!r}')
    check_network_options(opt, '--net')
    return dict(opt)


@dataclass
class Evaluated:
    """A network ready for scoring and the ``val:`` options of its test-time protocol."""
    net: torch.nn.Module
    val: dict


def build(net_opt: dict, ckpt: Path, device: str) -> Evaluated:
    opt = dict(net_opt)
    val = dict(opt.pop('val', None) or {})
    net = build_model(opt)
    load_checkpoint(net, ckpt, strict=True)
    return Evaluated(net.to(device).eval(), val)


def pairs_of(folder_in: Path, folder_gt: Path, what: str, limit: int | None) -> list[tuple[str, Path, Path]]:
    pairs = pair_by_stem(list_images(folder_in, f'{what} inputs'), list_images(folder_gt, f'{what} targets'), what)
    return pairs[:limit] if limit else pairs


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # 8-bit colour read (16-bit files keep the high byte)
    if img is None:
        raise ValueError(f'{path} is not a readable image')
    return img[..., ::-1]


@torch.no_grad()
def infer(ev: Evaluated, rgb: np.ndarray, device: str, pad_to: tuple[int, int] | None = None) -> np.ndarray:
    """Prediction in [0,1] (H×sH×3 float32, clamped) through the network's test-time protocol. ``pad_to``:
    zero-pad bottom/right to that H×W first (RealBlur); otherwise reflect-pad to the size multiple; crop back."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255)[None].to(device)
    val = {**ev.val, 'pad_to': list(pad_to)} if pad_to is not None else ev.val
    protocol = TestTimeProtocol.from_options(val, ev.net, pad_mode='constant' if pad_to else 'reflect')
    return protocol(ev.net, x).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()


def to_uint8(pred: np.ndarray) -> np.ndarray:
    """Round half to even after ×255 (skimage img_as_ubyte, docs/evaluation.md, Metrics)."""
    return np.rint(pred * 255).astype(np.uint8)


def complexity_cells(table: int, method: str, net_opt: dict, ctx: Context) -> tuple[list[Cell], list[str]]:
    """Params (M) and conv/linear GMACs at 1×3×S×S (S=256 as the paper; ptflops convention) from fke_basicsr.profile."""
    if not ctx.complexity:
        return [], []
    from fke_basicsr.profile import count_macs, count_parameters
    size = ctx.complexity_size
    opt = {k: v for k, v in net_opt.items() if k != 'val'}
    net = build_model(opt).eval()
    macs = count_macs(net, torch.rand(1, 3, size, size)).macs_ptflops / 1e9
    params = count_parameters(net) / 1e6
    proto = f'profiler: ptflops-convention MACs at 1×3×{size}×{size} (FFTs/scans not counted); Σ numel'
    metric = f'GMACs@{size}'
    cells = [Cell(table, method, '-', '-', metric, macs, ep.expected(table, method, '-', '-', metric), 1, proto),
             Cell(table, method, '-', '-', 'ParamsM', params, ep.expected(table, method, '-', '-', 'ParamsM'), 1, proto)]
    return cells, ['training memory (MB, one 256² patch) needs a CUDA device: python -m fke_basicsr.profile --memory']


def _cells(table, method, dataset, split, scores: dict[str, Aggregate], protocol, note='') -> list[Cell]:
    out = []
    for metric, agg in scores.items():
        extra = f'{agg.n_nonfinite} image(s) identical to GT (inf PSNR)' if agg.n_nonfinite else ''
        out.append(Cell(table, method, dataset, split, metric, agg.mean, ep.expected(table, method, dataset, split,
                                                                                         metric),
                        agg.count, protocol, '; '.join(x for x in (note, extra) if x)))
    return out


def score_u8(net, pairs, device, log, what) -> dict[str, Aggregate]:
    """Table 1/3 protocol: uint8 prediction, P-RGB-u8 PSNR + S-3D SSIM, mean over images."""
    psnr, ssim = [], []
    t0 = time.time()
    for name, inp, gt in pairs:
        pred = to_uint8(infer(net, read_rgb(inp), device))
        g = read_rgb(gt)
        psnr.append(calculate_psnr_rgb(pred, g))
        ssim.append(calculate_ssim_matlab(pred, g))
    log(f'{what}: {len(pairs)} images in {time.time() - t0:.1f}s')
    return {'PSNR': mean_of_images(psnr), 'SSIM3D': mean_of_images(ssim)}


def _need(ctx: Context, key: str) -> Path | None:
    return ctx.ckpts.get(key)


def deblur_net(ctx: Context, key: str) -> tuple[Evaluated, str] | None:
    """The DeepRFTv2 of checkpoint ``key`` and its method name ('DeepRFTv2-B'), or None without a checkpoint."""
    ckpt = _need(ctx, key)
    if ckpt is None:
        return None
    return build(ctx.nets[key], ckpt, ctx.device), 'DeepRFTv2-' + str(ctx.nets[key].get('variant', '?'))


# ------------------------------------------------------------------------------------------- tables
def p_t1(net_opt: dict) -> str:
    """Protocol label of Tables 1/3/6/7, naming the inference mode actually used."""
    tile = (net_opt.get('val') or {}).get('tile')
    mode = f"tiling {tile['size']}/{tile.get('overlap', 0)}" if tile else 'whole image (no tiling)'
    return f'P-RGB-u8 PSNR, S-3D SSIM (MATLAB); {mode}'


@register_table(1)
def table1(ctx: Context):
    found = deblur_net(ctx, 'gopro')
    if found is None:
        return [], ['skipped: no --ckpt gopro=...']
    net, method = found
    cells, notes = [], []
    for ds in ('GoPro', 'HIDE'):
        base = ctx.data_root / ds / 'test'
        if not base.is_dir():
            notes.append(f'{ds}: {base} missing (run scripts/data_preparation/prepare_{ds.lower()}.py)')
            continue
        pairs = pairs_of(base / 'blur', base / 'sharp', f'{ds} test', ctx.limit)
        scores = score_u8(net, pairs, ctx.device, ctx.log, ds)
        cells += _cells(1, method, ds, 'test', scores, p_t1(ctx.nets['gopro']))
    c, n = complexity_cells(1, method, ctx.nets['gopro'], ctx)
    return cells + c, notes + n


@register_table(2)
def table2(ctx: Context):
    cells, notes = [], []
    realblur_metric.ALIGNMENT_FAILURES.reset()
    for subset in ('R', 'J'):
        key = f'realblur_{subset.lower()}'
        found = deblur_net(ctx, key)
        if found is None:
            notes.append(f'RealBlur-{subset} skipped: no --ckpt {key}=...')
            continue
        net, method = found
        base = ctx.data_root / f'RealBlur_{subset}' / 'test'
        pairs = pairs_of(base / 'blur', base / 'sharp', f'RealBlur-{subset} test', ctx.limit)
        vals: dict[str, list] = {'PSNR_aligned': [], 'SSIM_aligned': [], 'PSNR_raw': [], 'SSIM_raw': []}
        before = realblur_metric.ALIGNMENT_FAILURES.count
        for name, inp, gt in pairs:
            pred = to_uint8(infer(net, read_rgb(inp), ctx.device, pad_to=ctx.realblur_pad))
            g = read_rgb(gt)
            s = realblur_metric.realblur_scores(pred, g, on_failure='unaligned', name=name)
            vals['PSNR_aligned'].append(s['psnr'])
            vals['SSIM_aligned'].append(s['ssim'])
            vals['PSNR_raw'].append(calculate_psnr_rgb(pred, g))
            vals['SSIM_raw'].append(calculate_ssim_matlab(pred, g))
        fails = realblur_metric.ALIGNMENT_FAILURES.count - before
        fail_note = f'{fails} ECC failure(s) scored unaligned' if fails else ''
        for metric, v in vals.items():
            proto = realblur_metric.PROTOCOL_ALIGNED if 'aligned' in metric else realblur_metric.PROTOCOL_UNALIGNED
            cells += _cells(2, method, f'RealBlur-{subset}', 'test', {metric: mean_of_images(v)},
                            proto + f'; zero pad {ctx.realblur_pad[0]}×{ctx.realblur_pad[1]}', fail_note if 'aligned' in metric else '')
    notes.append(f'ECC alignment failures: {realblur_metric.ALIGNMENT_FAILURES.count}'
                 + (f' ({", ".join(realblur_metric.ALIGNMENT_FAILURES.names[:10])})'
                    if realblur_metric.ALIGNMENT_FAILURES.count else ''))
    return cells, notes


@register_table(3)
def table3(ctx: Context):
    found = deblur_net(ctx, 'reds')
    if found is None:
        return [], ['skipped: no --ckpt reds=...']
    net, method = found
    base = ctx.data_root / 'REDS' / 'val300'
    pairs = pairs_of(base / 'blur', base / 'sharp', 'REDS val-300', ctx.limit)
    cells = _cells(3, method, 'REDS', 'val300', score_u8(net, pairs, ctx.device, ctx.log, 'REDS'),
                   p_t1(ctx.nets['reds']))
    c, n = complexity_cells(3, method, ctx.nets['reds'], ctx)
    return cells + c, n


@register_table(4)
def table4(ctx: Context):
    found = deblur_net(ctx, 'dpdd')
    if found is None:
        return [], ['skipped: no --ckpt dpdd=...']
    net, method = found
    base = ctx.data_root / 'DPDD' / 'test'
    pairs = pairs_of(base / 'inputC', base / 'target', 'DPDD test', ctx.limit)
    notes = []
    try:
        lp = dpdd_metric.build_lpips(ctx.lpips_alexnet, ctx.device)
    except (ImportError, FileNotFoundError) as err:
        lp = None
        notes.append(f'LPIPS not computed: {err}')
    per: dict[str, dict[str, float]] = {}
    for name, inp, gt in pairs:
        pred = infer(net, read_rgb(inp), ctx.device).astype(np.float64)  # float, NOT quantised (DPDD protocol)
        g = read_rgb(gt).astype(np.float64) / 255
        per[name] = {'PSNR': dpdd_metric.dpdd_psnr(pred, g), 'SSIM_sk': dpdd_metric.dpdd_ssim(pred, g),
                     'MAE': dpdd_metric.mae(pred, g)}
        if lp is not None:
            per[name]['LPIPS_alex'] = dpdd_metric.lpips_rgb(pred, g, model=lp)
    groups = {}
    for g in ('indoor', 'outdoor'):
        f = base / f'{g}.txt'
        if f.is_file():
            groups[g] = [n for n in f.read_text().split() if n in per]
    cells = []
    if len(groups) == 2 and set(groups['indoor']) | set(groups['outdoor']) == set(per):
        summary = dpdd_metric.dpdd_summary(per, groups['indoor'], groups['outdoor'])
        for split, scores in summary.items():
            cells += _cells(4, method, 'DPDD', split, scores, dpdd_metric.PROTOCOL)
    else:
        notes.append('indoor/outdoor lists missing or incomplete (prepare_dpdd.py --labels): combined only')
        metrics = sorted({m for s in per.values() for m in s})
        cells += _cells(4, method, 'DPDD', 'combined', {m: mean_of_images(s[m] for s in per.values())
                                                        for m in metrics}, dpdd_metric.PROTOCOL)
    return cells, notes


@register_table(5)
def table5(ctx: Context):
    """Lightweight SR: PSNR/SSIM on Y (BasicSR's MATLAB-style BT.601), crop border = scale, uint8 SR output."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    cells, notes = [], []
    for key in sorted(k for k in DEFAULT_NETS if k.startswith('sr')):
        ckpt = _need(ctx, key)
        if ckpt is None:
            notes.append(f'{key}: skipped (no --ckpt {key}=...)')
            continue
        opt = ctx.nets[key]
        scale = int(opt.get('upscale', 2))
        method = 'ATD-light+FKE' if opt.get('fke') else 'ATD-light'
        net = build(opt, ckpt, ctx.device)
        protocol = TestTimeProtocol.from_options(net.val, net.net, pad_mode='reflect')
        proto = f'PSNR/SSIM on Y (BT.601, [16,235]), crop border {scale}, uint8 output; {protocol.describe()}'
        for folder, column in SR_SETS:
            base = ctx.data_root / 'SR_benchmarks' / folder
            if not base.is_dir():
                notes.append(f'{column}: {base} missing (run scripts/data_preparation/prepare_sr_benchmarks.py)')
                continue
            pairs = pairs_of(base / 'LR_bicubic' / f'X{scale}', base / 'HR', f'{column} x{scale}', ctx.limit)
            psnr, ssim = [], []
            for _, lr, hr in pairs:
                x = torch.from_numpy(read_rgb(lr).transpose(2, 0, 1).copy()).float().div(255)[None].to(ctx.device)
                with torch.no_grad():
                    sr = protocol(net.net, x).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
                pred = to_uint8(sr)[..., ::-1]  # BasicSR's Y conversion expects BGR
                gt = read_rgb(hr)[: pred.shape[0], : pred.shape[1], ::-1]
                psnr.append(calculate_psnr(pred, gt, crop_border=scale, test_y_channel=True))
                ssim.append(calculate_ssim(pred, gt, crop_border=scale, test_y_channel=True))
            scores = {'PSNR_Y': mean_of_images(psnr), 'SSIM_Y': mean_of_images(ssim)}
            cells += _cells(5, method, column, f'x{scale}', scores, proto)
    return cells, notes


def _ablation_table(number: int, rows: dict, ctx: Context):
    cells, notes = [], []
    chosen = {k.split(':', 1)[1]: v for k, v in ctx.ablations.items() if k.startswith(f'T{number}:')}
    if not chosen:
        return [], [f'skipped: no --ablation T{number}:<row>=<net yml or json>,<ckpt>']
    base = ctx.data_root / 'GoPro' / 'test'
    pairs = pairs_of(base / 'blur', base / 'sharp', 'GoPro test', ctx.limit)
    for row, (net_opt, ckpt) in sorted(chosen.items()):
        if row not in rows:
            raise ValueError(f'--ablation T{number}:{row}: unknown row; expected one of {sorted(rows)}')
        net = build(net_opt, ckpt, ctx.device)
        scores = score_u8(net, pairs, ctx.device, ctx.log, f'T{number} {row}')
        cells += _cells(number, row, 'GoPro', 'test', {'PSNR': scores['PSNR']}, p_t1(net_opt), rows[row][0])
        if number == 6:
            c, _ = complexity_cells(6, row, net_opt, ctx)
            cells += [x for x in c if x.metric.startswith('GMACs')]
    return cells, notes


@register_table(6)
def table6(ctx: Context):
    return _ablation_table(6, ep.TABLE6_ROWS, ctx)


@register_table(7)
def table7(ctx: Context):
    return _ablation_table(7, ep.TABLE7_ROWS, ctx)


# ------------------------------------------------------------------------------------------- output
COLUMNS = ['table', 'method', 'dataset', 'split', 'metric', 'value', 'paper', 'delta', 'within_tolerance',
           'n_images', 'protocol', 'note']


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return '—'
    if not math.isfinite(v):
        return str(v)
    digits = 2 if metric.startswith(('PSNR', 'GMACs', 'Params', 'TrainMem')) else 4
    return f'{v:.{digits}f}'


def _row(c: Cell) -> dict:
    ok = None if c.delta is None else ep.within_tolerance(c.metric, c.value, c.paper)
    d = asdict(c)
    d.update(delta=c.delta, within_tolerance=ok)
    return {k: d[k] for k in COLUMNS}


def write_outputs(out: Path, results: dict[int, tuple[list[Cell], list[str]]], limit: int | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lines = ['# DeepRFTv2 — reproduced tables', '',
             f'Generated {time.strftime("%Y-%m-%d %H:%M")}' + (f'; **subset: first {limit} images per set** '
                                                                '(not comparable to the paper)' if limit else ''), '']
    with open(out / 'all_tables.csv', 'w', newline='') as fall:
        wall = csv.DictWriter(fall, COLUMNS)
        wall.writeheader()
        for number, (cells, notes) in sorted(results.items()):
            proto = ep.PROTOCOLS.get(number)
            lines += [f'## Table {number}' + (f' — {proto.title}' if proto else ''), '']
            if proto:
                lines += [f'Protocol: {proto.inference}; {proto.metrics}.', '']
            if cells:
                lines += ['| Method | Dataset | Split | Metric | Ours | Paper | Δ | n | Protocol |',
                          '|---|---|---|---|---:|---:|---:|---:|---|']
                for c in cells:
                    lines.append(f'| {c.method} | {c.dataset} | {c.split} | {c.metric} | {_fmt(c.value, c.metric)} | '
                                 f'{_fmt(c.paper, c.metric)} | {_fmt(c.delta, c.metric)} | {c.n_images} | '
                                 f'{c.protocol}{"; " + c.note if c.note else ""} |')
                lines.append('')
            lines += [f'- {n}' for n in notes] + ([''] if notes else [])
            with open(out / f'table{number}.csv', 'w', newline='') as f:
                w = csv.DictWriter(f, COLUMNS)
                w.writeheader()
                for c in cells:
                    w.writerow(_row(c))
                    wall.writerow(_row(c))
    md = out / 'tables.md'
    md.write_text('\n'.join(lines))
    return md


def _key_value(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if '=' not in item:
            raise ValueError(f'{what}: expected KEY=VALUE, got {item!r}')
        k, v = item.split('=', 1)
        out[k.strip()] = v.strip()
    return out


def main(argv: list[str] | None = None) -> int:
    """The command line; a usage, weights or data error is one ``error:`` line and exit code 2."""
    return run_cli('reproduce_tables', _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--data-root', type=Path, default=ROOT / 'datasets')
    ap.add_argument('--out', type=Path, default=ROOT / 'results' / 'tables')
    ap.add_argument('--tables', default='1,2,3,4,6,7', help='comma-separated table numbers')
    ap.add_argument('--ckpt', action='append', help=f'KEY=PATH, KEY in {sorted(DEFAULT_NETS)}')
    ap.add_argument('--net', action='append', help='KEY=<yml with network_g | JSON options> (overrides defaults)')
    ap.add_argument('--ablation', action='append', help='T6:rowNN=<yml|json>,<ckpt> (or T7:rowNN=...)')
    ap.add_argument('--limit', type=int, help='score only the first N pairs of each set (quick check)')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--lpips-alexnet', help=f'local AlexNet weights for LPIPS (or ${dpdd_metric.LPIPS_ENV})')
    ap.add_argument('--realblur-pad', type=int, nargs=2, default=list(REALBLUR_PAD), metavar=('H', 'W'),
                    help='RealBlur zero-pad target (the protocol: 776 680; smaller only for smoke tests)')
    ap.add_argument('--complexity-size', type=int, default=256,
                    help='square input side for the MACs column (the paper: 256; paper values shown only then)')
    ap.add_argument('--no-complexity', action='store_true', help='skip the params / MACs cells')
    ap.add_argument('--plugin', action='append', default=[], help='module registering more tables (Table 5)')
    args = ap.parse_args(argv)

    for mod in args.plugin:
        importlib.import_module(mod)
    ckpts = {k: Path(v) for k, v in _key_value(args.ckpt, '--ckpt').items()}
    unknown = set(ckpts) - set(DEFAULT_NETS)
    if unknown:
        raise ValueError(f'--ckpt: unknown key(s) {sorted(unknown)}; expected {sorted(DEFAULT_NETS)}')
    if not args.data_root.is_dir():
        raise ValueError(f'--data-root: {args.data_root} is not a folder; prepare the datasets (datasets/README.md) '
                         'or point --data-root to where they live.')
    for k, p in ckpts.items():
        if not p.is_file():
            raise ValueError(f'--ckpt {k}: no checkpoint file at {p}')
        safe_load(p, what=f'--ckpt {k}:')  # weights-only, refused before any table work if it holds code
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f'--out: {args.out} is a file; give a folder for the tables.')
    nets = {k: dict(v) for k, v in DEFAULT_NETS.items()}
    for k, v in _key_value(args.net, '--net').items():
        if k not in DEFAULT_NETS:
            raise ValueError(f'--net: unknown key {k!r}; expected {sorted(DEFAULT_NETS)}')
        nets[k] = network_options(v)
    ablations = {}
    for k, v in _key_value(args.ablation, '--ablation').items():
        if ',' not in v:
            raise ValueError(f'--ablation {k}: expected <yml|json>,<ckpt>, got {v!r}')
        spec, ck = v.rsplit(',', 1)
        if not Path(ck).is_file():
            raise ValueError(f'--ablation {k}: no checkpoint file at {ck}')
        safe_load(ck, what=f'--ablation {k}:')
        ablations[k] = (network_options(spec), Path(ck))
    tables = [int(t) for t in args.tables.split(',') if t.strip()]
    missing = [t for t in tables if t not in TABLE_BUILDERS]
    if missing:
        raise ValueError(f'--tables: no builder for table(s) {missing}; available {sorted(TABLE_BUILDERS)} '
                         '(more can be added with --plugin)')
    if args.limit is not None and args.limit < 1:
        raise ValueError(f'--limit: expected a positive number of images, got {args.limit}')
    if not ckpts and not args.ablation and not args.plugin:
        raise ValueError('nothing to do: every table needs weights; give --ckpt KEY=PATH (KEY in '
                         f'{", ".join(sorted(DEFAULT_NETS))}) or --ablation T6:rowNN=<yml>,<ckpt>.')
    ctx = Context(args.data_root, ckpts, nets, args.device, args.limit, args.lpips_alexnet, ablations,
                  not args.no_complexity, tuple(args.realblur_pad), args.complexity_size)
    with torch.no_grad():  # scoped: main() is also called in-process (tests, notebooks)
        results = {t: TABLE_BUILDERS[t](ctx) for t in tables}
    md = write_outputs(args.out, results, args.limit)
    print(md.read_text())
    print(f'wrote {md} and {args.out}/table*.csv')
    return 0


if __name__ == '__main__':
    sys.exit(main())
