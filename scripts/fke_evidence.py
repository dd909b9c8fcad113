"""Does the FKE learn the blur, and does it pay? FKE on vs off on camera-shake blur (paper §3.1, Table 7, Figs. 6, 8).

    python scripts/fke_evidence.py [--iters 400] [--seeds 100 101 102] [--threads 1] [--out results/fke_evidence]

For each seed, the demo recipe (options/train/Demo/DeepRFTv2-Demo.yml, BasicSR's DeblurModel: the same losses,
optimiser, schedule and data pipeline as ``scripts/run_demo.py``) is trained three times on the camera-shake demo
dataset (``scripts/make_demo_dataset.py --blur shake``, built under ``--data`` if missing):

* ``on``       network_g.fke: true, ``--iters`` iterations;
* ``off``      network_g.fke: false, the same iterations (equal iterations);
* ``off_time`` network_g.fke: false, as many iterations as fit the ``on`` run's training time at the ``off`` run's
  measured speed (equal time; the cosine schedule is set to that length). The clock is the process's CPU time with
  ``--threads 1`` on the CPU (the wall time of a single-threaded run on an idle core: on a shared machine the wall
  clock charges each run for the others' load), else the wall clock.

Validation PSNR (RGB, uint8, BasicSR's metric) of each arm and, for the FKE network, the kernel scores of
``fke_basicsr.kernel_metrics`` (OTF magnitude / phase agreement, Fig. 8's CKA of r_0 and r_L with the true OTF) are
measured at ``--evals`` points during training; the scores at iteration 0 (the untrained network) are the baseline,
the regularised division F⁻¹(F(B)/F(S)) the ceiling. Written under ``--out`` (each file atomically):
``results.json`` (everything, updated after every run), ``fke_evidence.md`` (the tables, mean ± std over seeds)
and ``fke_evidence.png`` (blurry / estimated kernel / true kernel for a few images, the scores and PSNR vs
iterations). ``--report-only`` rebuilds the table and figure from ``results.json``. docs/fke_evidence.md has the
measured numbers.
"""
from __future__ import annotations

import argparse
import copy
import glob
import json
import logging
import os
import os.path as osp
import sys
import time
from typing import Any

import numpy as np

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
DEFAULT_OPT = osp.join('options', 'train', 'Demo', 'DeepRFTv2-Demo.yml')
DEFAULT_DATA = osp.join('datasets', 'DemoShake')
ARMS = ('on', 'off', 'off_time')
KERNEL_KEYS = ('otf_mag', 'otf_phase', 'cka_r0', 'cka_rL')
EXIT_BAD_INPUT = 2


class InputError(ValueError):
    """A bad option or folder: reported in one paragraph, exit code 2."""


# ------------------------------------------------------------------------------------------------ small helpers


def atomic_write(path: str, data: str | bytes) -> None:
    """Write ``path`` through a temporary file and os.replace, so readers never see half a file."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb' if isinstance(data, bytes) else 'w') as f:
        f.write(data)
    os.replace(tmp, path)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def fmt(values: list[float], digits: int = 2) -> str:
    m, s = mean_std(values)
    return f'{m:.{digits}f} ± {s:.{digits}f}'


def eval_points(iters: int, evals: int) -> list[int]:
    """Iterations at which the arm is measured: 0, then ``evals`` evenly spaced points ending at ``iters``."""
    return sorted({0, *(int(round(iters * (j + 1) / evals)) for j in range(max(evals, 1)))})


# ------------------------------------------------------------------------------------------------ options / data


def load_options(opt_path: str) -> dict:
    import fke_basicsr  # noqa: F401  (shims before basicsr)
    from fke_basicsr.options import load_yaml
    path = opt_path if osp.isabs(opt_path) else osp.join(ROOT, opt_path)
    if not osp.isfile(path):
        raise InputError(f'--opt: {opt_path} does not exist. Pass the demo options file ({DEFAULT_OPT}) or another '
                         'DeepRFTv2 training options file.')
    return load_yaml(path)


def ensure_data(data: str) -> str:
    """The camera-shake dataset under ``data`` (built when missing; an existing train/ + val/ layout is used)."""
    data = data if osp.isabs(data) else osp.join(ROOT, data)
    if all(osp.isdir(osp.join(data, split, sub)) for split in ('train', 'val') for sub in ('blur', 'sharp')):
        if not glob.glob(osp.join(data, 'val', 'kernels', '*.npy')):
            raise InputError(f'--data: {data}/val has no kernels/*.npy; the kernel scores need the true kernels. '
                             'Build the folder with scripts/make_demo_dataset.py --blur shake --out <folder>.')
        return data
    sys.path.insert(0, osp.join(ROOT, 'scripts'))
    from make_demo_dataset import make_demo_dataset
    return make_demo_dataset(data, blur='shake')


def arm_options(base: dict, data: str, arm: str, seed: int, iters: int, exp_root: str, num_gpu: int = 0) -> dict:
    """The demo options for one run: the FKE switch, the seed, the length, the dataset, BasicSR's runtime keys."""
    opt = copy.deepcopy(base)
    opt['name'] = f'fke_evidence_{arm}_seed{seed}'
    opt['manual_seed'] = seed
    opt['network_g']['fke'] = arm == 'on'
    opt['train']['total_iter'] = iters
    if 'T_max' in opt['train'].get('scheduler', {}):
        opt['train']['scheduler']['T_max'] = iters
    train = opt['datasets']['train']
    lmdb = all(osp.isdir(osp.join(data, 'train', f'{s}.lmdb')) for s in ('blur', 'sharp'))
    ext = '.lmdb' if lmdb else ''
    train.update(dataroot_gt=osp.join(data, 'train', f'sharp{ext}'), dataroot_lq=osp.join(data, 'train', f'blur{ext}'),
                 io_backend={'type': 'lmdb' if lmdb else 'disk'}, phase='train', scale=opt.get('scale', 1))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=num_gpu, root_path=ROOT, auto_resume=False)
    run_dir = osp.join(exp_root, opt['name'])
    opt['path'] = {**(opt.get('path') or {}), 'pretrain_network_g': None, 'resume_state': None,
                   'experiments_root': run_dir, 'models': osp.join(run_dir, 'models'),
                   'training_states': osp.join(run_dir, 'training_states'), 'log': run_dir,
                   'visualization': osp.join(run_dir, 'visualization')}
    return opt


# ------------------------------------------------------------------------------------------------ measuring


def validation_psnr(net: Any, val_dir: str, limit: int | None = None) -> tuple[float, float]:
    """Mean (PSNR of the blurry input, PSNR of the output) over val_dir/{blur,sharp}/*.png (RGB, uint8)."""
    import cv2
    import torch

    from basicsr.metrics import calculate_psnr
    from basicsr.utils import img2tensor, tensor2img

    from fke_basicsr.archs.outputs import prediction
    from fke_basicsr.ops.geometry import crop_to, pad_to_multiple
    was_training = net.training
    net.eval()
    rows = []
    for gt_path in sorted(glob.glob(osp.join(val_dir, 'sharp', '*.png')))[:limit]:
        gt = cv2.imread(gt_path)
        blur = cv2.imread(osp.join(val_dir, 'blur', osp.basename(gt_path)))
        x = img2tensor(blur.astype('float32') / 255.0, bgr2rgb=True, float32=True)[None]
        xp, size = pad_to_multiple(x, getattr(net, 'size_multiple', 8))
        with torch.no_grad():
            out = tensor2img(crop_to(prediction(net(xp)), size))
        rows.append((calculate_psnr(blur, gt, 0), calculate_psnr(out, gt, 0)))
    net.train(was_training)
    return float(np.mean([r[0] for r in rows])), float(np.mean([r[1] for r in rows]))


def kernel_point(net: Any, val_dir: str, limit: int | None) -> dict[str, Any]:
    from fke_basicsr.kernel_metrics import kernel_agreement
    was_training = net.training
    res = kernel_agreement(net, osp.join(val_dir), limit)
    net.train(was_training)
    return {'all_fkes': res['all_fkes'], 'fke': res['fke'], 'division': res['division'],
            'division_per_fke': res['division_per_fke']}


def train_arm(opt: dict, val_dir: str, points: list[int], kernels: bool, val_limit: int | None,
              logger: logging.Logger) -> dict[str, Any]:
    """Train one arm in this process with BasicSR's DeblurModel; measure at ``points``; return the record."""
    import torch
    from tqdm import tqdm

    from basicsr.data import build_dataloader, build_dataset
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    set_random_seed(opt['manual_seed'])
    train_set = build_dataset(opt['datasets']['train'])
    loader = build_dataloader(train_set, opt['datasets']['train'], num_gpu=0, dist=False, sampler=None,
                              seed=opt['manual_seed'])
    model = build_model(opt)
    net = model.net_g
    total = int(opt['train']['total_iter'])
    record: dict[str, Any] = {'iters': total, 'points': [], 'train_s': 0.0, 'train_cpu_s': 0.0}

    def measure(it: int) -> None:
        probe = net if opt['num_gpu'] == 0 else copy.deepcopy(net).cpu()  # measured on the CPU either way
        psnr_in, psnr_out = validation_psnr(probe, val_dir, val_limit)
        p = {'iter': it, 'psnr_in': psnr_in, 'psnr_out': psnr_out, 'train_s': record['train_s']}
        if kernels:
            p['kernel'] = kernel_point(probe, val_dir, val_limit)
        record['points'].append(p)
        score = f", otf_mag {p['kernel']['all_fkes']['otf_mag']:.3f}" if kernels else ''
        logger.info(f"{opt['name']} iter {it}: val PSNR {psnr_in:.2f} -> {psnr_out:.2f} dB{score} "
                    f"(train {record['train_s']:.0f} s)")

    measure(0)
    it = 0
    bar = tqdm(total=total, desc=opt['name'], mininterval=30, file=sys.stdout, disable=None)
    warmup = opt['train'].get('warmup_iter', -1)
    while it < total:
        for batch in loader:
            if opt['num_gpu']:
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            it += 1
            model.update_learning_rate(it, warmup_iter=warmup)
            model.feed_data(batch)
            model.optimize_parameters(it)
            if opt['num_gpu']:
                torch.cuda.synchronize()
            record['train_s'] += time.perf_counter() - t0
            record['train_cpu_s'] += time.process_time() - c0
            bar.update(1)
            if it in points and it > 0:
                measure(it)
            if it >= total:
                break
    bar.close()
    record['s_per_iter'] = record['train_s'] / max(total, 1)
    record['cpu_s_per_iter'] = record['train_cpu_s'] / max(total, 1)
    os.makedirs(opt['path']['models'], exist_ok=True)
    torch.save({'params': net.state_dict()}, osp.join(opt['path']['models'], 'net_g_tmp.pth'))
    os.replace(osp.join(opt['path']['models'], 'net_g_tmp.pth'), osp.join(opt['path']['models'], 'net_g_latest.pth'))
    return record


# ------------------------------------------------------------------------------------------------ report


def summarise(results: dict) -> dict[str, Any]:
    """Per-arm final PSNR and gains, paired on − off differences, kernel scores (baseline / trained / ceiling)."""
    seeds = [s for s in results['seeds'] if all(a in results['runs'].get(str(s), {}) for a in ARMS)]
    if not seeds:
        raise InputError('results.json: no seed has all three runs (on, off, off_time) yet; run the training first.')
    runs = [results['runs'][str(s)] for s in seeds]
    last = {a: [r[a]['points'][-1] for r in runs] for a in ARMS}
    out: dict[str, Any] = {'seeds': seeds, 'psnr_in': [p['psnr_in'] for p in last['on']]}
    for a in ARMS:
        out[a] = {'iters': [r[a]['iters'] for r in runs], 'train_s': [r[a]['train_s'] for r in runs],
                  'train_cpu_s': [r[a].get('train_cpu_s', r[a]['train_s']) for r in runs],
                  'psnr': [p['psnr_out'] for p in last[a]], 'gain': [p['psnr_out'] - p['psnr_in'] for p in last[a]]}
    out['diff_iters'] = [a - b for a, b in zip(out['on']['psnr'], out['off']['psnr'])]
    out['diff_time'] = [a - b for a, b in zip(out['on']['psnr'], out['off_time']['psnr'])]
    first = [r['on']['points'][0]['kernel'] for r in runs]
    final = [r['on']['points'][-1]['kernel'] for r in runs]
    fkes = list(first[0]['fke'])
    out['kernel'] = {}
    for scope in ['all_fkes', *fkes]:
        def pick(ks: list[dict], key: str, scope: str = scope) -> list[float]:
            return [(k['all_fkes'] if scope == 'all_fkes' else k['fke'][scope])[key] for k in ks]

        def ceil(key: str, scope: str = scope) -> float:
            d = first[0]['division'] if scope == 'all_fkes' else first[0]['division_per_fke'][scope]
            return d[key]
        out['kernel'][scope] = {k: {'baseline': pick(first, k), 'trained': pick(final, k), 'ceiling': ceil(k)}
                                for k in KERNEL_KEYS}
    return out


def identity_reference(data: str, fkes: list[str], limit: int | None) -> dict[str, dict[str, float]]:
    """The identity filter's scores (kernel_metrics.identity_scores) on the validation kernels, per FKE (full
    resolution for fke_max*, half for fke_mid*) and their mean ('all_fkes'): what a pass-through FKE scores."""
    import cv2

    from fke_basicsr.kernel_metrics import identity_scores
    val = osp.join(data, 'val')
    stems = sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(val, 'kernels', '*.npy')))[:limit]
    h, w = cv2.imread(osp.join(val, 'blur', f'{stems[0]}.png')).shape[:2]
    out = {}
    for name in fkes:
        size = (h // 2, w // 2) if 'mid' in name else (h, w)
        rows = [identity_scores(np.load(osp.join(val, 'kernels', f'{s}.npy')), size, h) for s in stems]
        out[name] = {k: float(np.mean([r[k] for r in rows])) for k in KERNEL_KEYS}
    out['all_fkes'] = {k: float(np.mean([out[n][k] for n in fkes])) for k in KERNEL_KEYS}
    return out


def markdown(results: dict, summary: dict) -> str:
    cfg = results['config']
    n = len(summary['seeds'])
    lines = [f"FKE on vs off, demo recipe on camera-shake blur ({cfg['data_note']}); {n} seeds "
             f"({', '.join(map(str, summary['seeds']))}), mean ± std (sample std over seeds); {cfg['threads']} torch "
             f"thread(s); machine: {cfg['machine']}.", '',
             '| run | iterations | training CPU time (s) | training wall time (s) | val PSNR (dB) | '
             'gain over blurry (dB) |', '|---|---|---|---|---|---|']
    names = {'on': 'FKE on', 'off': 'FKE off, equal iterations', 'off_time': f"FKE off, equal {cfg['clock']}"}
    for a in ARMS:
        s = summary[a]
        lines.append(f"| {names[a]} | {fmt(s['iters'], 0)} | {fmt(s['train_cpu_s'], 0)} | {fmt(s['train_s'], 0)} | "
                     f"{fmt(s['psnr'])} | "
                     f"{fmt(s['gain'])} |")
    lines += ['', f"Blurry input: {fmt(summary['psnr_in'])} dB. Paired difference FKE on − off: equal iterations "
              f"**{fmt(summary['diff_iters'])} dB**, equal {cfg['clock']} **{fmt(summary['diff_time'])} dB**.", '',
              f"Kernel scores of the FKE network on the {cfg['val_images']} validation images (threshold |OTF| < "
              f"{cfg['threshold']}): untrained network (baseline), after training, the identity filter (a "
              'pass-through FKE, K = 1), regularised division F⁻¹(F(B)/F(S)) (ceiling).', '',
              '| FKE | score | untrained (baseline) | trained | identity filter | ceiling | trained − baseline | '
              '3 × std(trained) |', '|---|---|---|---|---|---|---|---|']
    for scope, scores in summary['kernel'].items():
        for k, v in scores.items():
            diff = [t - b for t, b in zip(v['trained'], v['baseline'])]
            _, sd = mean_std(v['trained'])
            lines.append(f"| {'mean of FKEs' if scope == 'all_fkes' else scope} | {k} | {fmt(v['baseline'], 3)} | "
                         f"{fmt(v['trained'], 3)} | {v['identity']:.3f} | {v['ceiling']:.3f} | {fmt(diff, 3)} | "
                         f"{3 * sd:.3f} |")
    return '\n'.join(lines) + '\n'


def _best_kernel(net: Any, blur: Any, kernel: np.ndarray, crop: int) -> np.ndarray:
    """The full-scale FKE's most OTF-like channel as a centred spatial kernel crop (sign: positive centre mass)."""
    import torch

    from fke_basicsr.kernel_metrics import kernel_otf
    from fke_basicsr.kernels import analyse, spatial_kernel
    res = analyse(net, blur)
    cap = max(res.fkes, key=lambda c: c.kernel_spectrum.shape[-2])
    spec = cap.kernel_effective_spectrum[0]
    h, wf = spec.shape[-2:]
    otf = kernel_otf(kernel, (h, 2 * (wf - 1)))
    e = spec.to(torch.complex128)
    score = [abs(float((x * otf.conj()).sum().abs() / (x.abs().norm() * otf.abs().norm()))) for x in e]
    k = spatial_kernel(spec[int(np.argmax(score))][None])[0].double().numpy()
    cy, cx = k.shape[0] // 2, k.shape[1] // 2
    k = k[cy - crop // 2:cy + crop // 2 + 1, cx - crop // 2:cx + crop // 2 + 1]
    return k * np.sign(k.sum() or 1.0)


def figure(results: dict, summary: dict, out_png: str, data: str, images: int = 3) -> None:
    """blurry / estimated kernel / true kernel rows (seed 0's trained FKE), and scores + PSNR vs iterations."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import torch

    import fke_basicsr  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY

    from fke_basicsr.kernels import _read_rgb
    val = osp.join(data, 'val')
    stems = sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(val, 'kernels', '*.npy')))[:images]
    seed = summary['seeds'][0]
    base = load_options(results['config']['opt'])
    net_opt = dict(base['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    weights = osp.join(results['config']['exp_root'], f'fke_evidence_on_seed{seed}', 'models', 'net_g_latest.pth')
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'])
    fig = plt.figure(figsize=(11, 3 * max(len(stems), 2)))
    gs = fig.add_gridspec(max(len(stems), 2), 5)
    for i, stem in enumerate(stems):
        blur = _read_rgb(osp.join(val, 'blur', f'{stem}.png'))
        kernel = np.load(osp.join(val, 'kernels', f'{stem}.npy'))
        est = _best_kernel(net, blur, kernel, kernel.shape[0])
        for j, (img, title) in enumerate(((blur[0].permute(1, 2, 0).numpy(), f'blurry {stem}'),
                                          (est, f'FKE estimate (seed {seed})'), (kernel, 'true kernel'))):
            ax = fig.add_subplot(gs[i, j])
            ax.imshow(img, cmap=None if img.ndim == 3 else 'viridis')
            ax.set_title(title, fontsize=9)
            ax.axis('off')
    runs = [results['runs'][str(s)] for s in summary['seeds']]
    ax = fig.add_subplot(gs[0, 3:])
    its = [p['iter'] for p in runs[0]['on']['points']]
    for key, colour in zip(KERNEL_KEYS, ('C0', 'C1', 'C2', 'C3')):
        vals = np.array([[p['kernel']['all_fkes'][key] for p in r['on']['points']] for r in runs])
        ax.errorbar(its, vals.mean(0), yerr=vals.std(0), color=colour, label=key, capsize=3)
        ax.axhline(summary['kernel']['all_fkes'][key]['ceiling'], color=colour, ls=':', lw=1)
    ax.set_xlabel('iteration (0 = untrained baseline)')
    ax.set_title('kernel scores (mean of FKEs; dotted: division ceiling)', fontsize=9)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(gs[1, 3:])
    for arm, colour in (('on', 'C0'), ('off', 'C1')):
        vals = np.array([[p['psnr_out'] for p in r[arm]['points']] for r in runs])
        ax.errorbar([p['iter'] for p in runs[0][arm]['points']], vals.mean(0), yerr=vals.std(0), color=colour,
                    label=f'FKE {arm}', capsize=3)
    ax.axhline(float(np.mean(summary['psnr_in'])), color='grey', ls=':', lw=1, label='blurry input')
    ax.set_xlabel('iteration')
    ax.set_ylabel('val PSNR (dB)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f'{out_png}.tmp{os.getpid()}.png'
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, out_png)


def report(results: dict, out: str, data: str) -> str:
    summary = summarise(results)
    ident = identity_reference(data, [s for s in summary['kernel'] if s != 'all_fkes'], results['config']['val_limit'])
    for scope, scores in summary['kernel'].items():
        for k, v in scores.items():
            v['identity'] = ident[scope][k]
    md = markdown(results, summary)
    atomic_write(osp.join(out, 'fke_evidence.md'), md)
    atomic_write(osp.join(out, 'summary.json'), json.dumps(summary, indent=1))
    figure(results, summary, osp.join(out, 'fke_evidence.png'), data)
    return md


# ------------------------------------------------------------------------------------------------ main


def merge_results(results: dict, others: list[str]) -> dict:
    """``results`` with the seeds of other results.json files added (same options, iterations and clock)."""
    for path in others:
        try:
            with open(path) as f:
                other = json.load(f)
        except (OSError, ValueError) as err:
            raise InputError(f'--merge: cannot read {path} ({err}); pass results.json files of fke_evidence runs.')
        keys = ('opt', 'iters', 'evals', 'threads', 'clock', 'val_limit')
        if any(other['config'].get(k) != results['config'].get(k) for k in keys):
            raise InputError(f'--merge: {path} was run with other options ({", ".join(keys)} must match).')
        for seed in other['seeds']:
            if all(a in results['runs'].get(str(seed), {}) for a in ARMS):
                raise InputError(f'--merge: seed {seed} of {path} is already in the report.')
            if seed not in results['seeds']:  # an unfinished seed of the first run is replaced
                results['seeds'].append(seed)
            results['runs'][str(seed)] = other['runs'][str(seed)]
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--opt', default=DEFAULT_OPT, help='training options (default: the demo recipe)')
    p.add_argument('--data', default=None, help=f'camera-shake dataset folder, built if missing (default '
                                            f'{DEFAULT_DATA}; with --report-only: the one results.json names)')
    p.add_argument('--iters', type=int, default=400, help='iterations of the FKE-on and equal-iteration runs')
    p.add_argument('--seeds', type=int, nargs='+', default=[100, 101, 102], help='seeds (at least 3 for a spread)')
    p.add_argument('--evals', type=int, default=4, help='measurements during training besides iteration 0')
    p.add_argument('--threads', type=int, default=1, help='torch threads (1: fairest on a shared machine)')
    p.add_argument('--num-gpu', type=int, default=0, choices=(0, 1), help='1: train on the GPU (measured on the CPU)')
    p.add_argument('--val-limit', type=int, default=None, help='use only the first N validation images')
    p.add_argument('--out', default=osp.join('results', 'fke_evidence'), help='output folder')
    p.add_argument('--report-only', action='store_true', help='rebuild the table and figure from results.json')
    p.add_argument('--merge', nargs='+', default=[], metavar='RESULTS_JSON',
                   help='with --report-only: add the seeds of other runs of the same configuration (e.g. seeds run '
                        'in parallel with different --out) to the report')
    args = p.parse_args(argv)
    for name in ('iters', 'evals', 'threads'):
        if getattr(args, name) < 1:
            raise InputError(f'--{name.replace("_", "-")}: expected a positive integer, got {getattr(args, name)}.')
    if args.val_limit is not None and args.val_limit < 1:
        raise InputError(f'--val-limit: expected a positive integer, got {args.val_limit}.')
    if len(set(args.seeds)) != len(args.seeds):
        raise InputError(f'--seeds: {args.seeds} repeats a seed; give distinct seeds.')
    return args


def run(args: argparse.Namespace) -> int:
    out = args.out if osp.isabs(args.out) else osp.join(ROOT, args.out)
    os.makedirs(out, exist_ok=True)
    results_path = osp.join(out, 'results.json')
    import fke_basicsr  # noqa: F401
    from basicsr.utils import get_root_logger
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=osp.join(out, 'fke_evidence.log'))
    if args.report_only:
        if not osp.isfile(results_path):
            raise InputError(f'--report-only: {results_path} does not exist; run without --report-only first.')
        with open(results_path) as f:
            results = json.load(f)
        results = merge_results(results, args.merge)
        if args.merge:
            atomic_write(osp.join(out, 'results_merged.json'), json.dumps(results, indent=1))
        data = args.data or results['config']['data']
        if not osp.isdir(osp.join(data, 'val', 'kernels')):
            raise InputError(f'--data: {data}/val/kernels does not exist; pass the dataset the runs were trained on.')
        print(report(results, out, data))
        return 0
    data = ensure_data(args.data or DEFAULT_DATA)
    import torch
    torch.set_num_threads(args.threads)
    if args.num_gpu and not torch.cuda.is_available():
        raise InputError('--num-gpu 1: this machine has no usable CUDA device; run with --num-gpu 0 (CPU).')
    base = load_options(args.opt)
    val_dir = osp.join(data, 'val')
    n_val = len(glob.glob(osp.join(val_dir, 'sharp', '*.png')))
    meta = {}
    if osp.isfile(osp.join(data, 'COMPLETE.json')):
        with open(osp.join(data, 'COMPLETE.json')) as f:
            meta = json.load(f)
    exp_root = osp.join(out, 'runs')
    results = {'config': {'opt': args.opt, 'data': data, 'iters': args.iters, 'seeds': args.seeds, 'evals': args.evals,
                          'threads': args.threads, 'val_limit': args.val_limit, 'threshold': 0.9,
                          'val_images': min(n_val, args.val_limit or n_val), 'exp_root': exp_root,
                          'clock': 'CPU time (wall time on an idle core)' if not args.num_gpu and args.threads == 1
                          else 'wall time',
                          'machine': (torch.cuda.get_device_name(0) if args.num_gpu else f'{os.cpu_count()}-core CPU'),
                          'data_note': f"{meta.get('blur', 'given')} kernels, {meta.get('train', '?')} train / "
                                       f"{meta.get('val', '?')} val pairs",
                          'command': ' '.join(['python', 'scripts/fke_evidence.py', *sys.argv[1:]])},
               'seeds': args.seeds, 'runs': {}}
    started = time.time()
    for seed in args.seeds:
        runs = results['runs'].setdefault(str(seed), {})
        points = eval_points(args.iters, args.evals)
        gpu = args.num_gpu
        cpu_clock = not gpu and args.threads == 1
        runs['on'] = train_arm(arm_options(base, data, 'on', seed, args.iters, exp_root, gpu), val_dir, points,
                               True, args.val_limit, logger)
        atomic_write(results_path, json.dumps(results, indent=1))
        runs['off'] = train_arm(arm_options(base, data, 'off', seed, args.iters, exp_root, gpu), val_dir, points,
                                False, args.val_limit, logger)
        atomic_write(results_path, json.dumps(results, indent=1))
        # equal time: the off network's iterations that fit the on run's training time at the off run's speed.
        # On the CPU the clock is the process's CPU time (= wall time of a single-threaded run on an idle core; a
        # shared machine's wall clock charges each run for the others' load); on a GPU the wall clock.
        key = 'train_cpu_s' if cpu_clock else 'train_s'
        iters_t = max(1, int(round(runs['on'][key] / (runs['off'][key] / runs['off']['iters']))))
        logger.info(f'seed {seed}: FKE on {runs["on"][key] / args.iters:.3f} s/it, off '
                    f'{runs["off"][key] / args.iters:.3f} s/it ({key}) -> equal-time off run of {iters_t} iterations')
        runs['off_time'] = train_arm(arm_options(base, data, 'off_time', seed, iters_t, exp_root, gpu), val_dir,
                                     [iters_t], False, args.val_limit, logger)
        atomic_write(results_path, json.dumps(results, indent=1))
    results['wall_s'] = time.time() - started
    atomic_write(results_path, json.dumps(results, indent=1))
    md = report(results, out, data)
    print(md)
    logger.info(f'Wrote {out}/fke_evidence.md, fke_evidence.png, results.json ({results["wall_s"] / 60:.1f} min).')
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, ROOT)
    try:
        return run(parse_args(argv))
    except InputError as err:
        print(f'fke_evidence: {err}', file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == '__main__':
    sys.exit(main())
