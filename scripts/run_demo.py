"""The main job: build the Demo blur dataset if missing, train a small DeepRFTv2 on it, evaluate input vs output.

    python scripts/run_demo.py [--minutes M | --iters N] [--threads T] [--opt options/train/Demo/DeepRFTv2-Demo.yml]

The number of iterations fits a wall-clock budget for the whole job (default 14 minutes: dataset, training,
validation, evaluation): a few timed steps of the network with 1, 2 and torch's default thread count measure this
machine's speed first and pick the fastest (a busy machine trains fewer iterations; --iters fixes the count).

Training runs BasicSR's own pipeline as a subprocess (`python basicsr/train.py -opt <yml>`), writing
experiments/<name>/ (log, checkpoints, validation images) and tb_logger/<name>/. The evaluation then loads
experiments/<name>/models/net_g_latest.pth and prints, per validation image and on average, PSNR/SSIM
(RGB, uint8, BasicSR's metrics) of the blurry input and of the restored output against the sharp image, and
what the gain measured for the same recipe at a similar number of iterations was (the gain grows with the
iterations, so a slower machine, which trains fewer in the same budget, gains less; README, "The main job").
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
DEFAULT_OPT = osp.join('options', 'train', 'Demo', 'DeepRFTv2-Demo.yml')
# (iterations, validation gain in dB) measured with this recipe and seed on the 2-core CPU (README, "The main job").
REFERENCE_GAINS = ((2000, 1.42), (2303, 1.58), (3325, 2.24))
# Seconds of the budget kept for what is not a training step: train.py start-up, two validations, checkpoints and
# the final evaluation (~30 s measured on the 2-core CPU); the steps get 90 % of the rest, for the data loading and
# logging between them.
RESERVE_S, STEP_SHARE = 45.0, 0.9


def reference_gain(iters: int, refs: tuple[tuple[int, float], ...] = REFERENCE_GAINS) -> float | None:
    """The gain measured at ``iters`` iterations, linearly interpolated between the reference runs; None outside
    their range (fewer or more iterations than any measured run)."""
    pts = sorted(refs)
    if not pts[0][0] <= iters <= pts[-1][0]:
        return None
    for (i0, g0), (i1, g1) in zip(pts, pts[1:]):
        if i0 <= iters <= i1:
            return g0 + (g1 - g0) * (iters - i0) / (i1 - i0)
    return pts[-1][1]


def compare_with_reference(gain: float, iters: int | None,
                           refs: tuple[tuple[int, float], ...] = REFERENCE_GAINS) -> str:
    """One or two sentences: what this run gained against what the recipe gained at about the same iterations."""
    measured = ', '.join(f'{g:+.2f} dB at {i:,} iterations' for i, g in sorted(refs))
    if iters is None:
        return f'Measured for this recipe on the 2-core CPU: {measured}.'
    ref = reference_gain(iters, refs)
    if ref is not None:
        return (f'This run trained {iters:,} iterations; the same recipe measured about {ref:+.2f} dB at that count on '
                f'the 2-core CPU (runs differ by ~0.1 dB): this run is {gain - ref:+.2f} dB from it. ({measured}.)')
    side = 'fewer' if iters < min(i for i, _ in refs) else 'more'
    return (f'This run trained {iters:,} iterations, {side} than any reference run of this recipe ({measured}); '
            + ('the gain grows with the iterations: a larger --minutes or --iters trains more.' if side == 'fewer'
               else 'expect at least the largest reference gain.'))


def thread_candidates() -> list[int]:
    """Thread counts worth timing: 1, 2 and torch's default. On a busy machine (or a tiny network) fewer threads can
    be faster, and a load average cannot tell: it lags the machine by a minute."""
    import torch
    return sorted({1, min(2, os.cpu_count() or 1), torch.get_num_threads()})


def load_opt(opt_path: str) -> dict:
    import yaml
    sys.path.insert(0, ROOT)
    import fke_basicsr  # noqa: F401  (shims before basicsr)
    from basicsr.utils.options import ordered_yaml
    with open(osp.join(ROOT, opt_path)) as f:
        return yaml.load(f, Loader=ordered_yaml()[0])


def seconds_per_iter(opt: dict, threads: int, steps: int = 8, warmup: int = 2) -> float:
    """Median time of a few training steps (network, DeblurModel's losses, clipping, AdamW) on random data."""
    import torch
    from basicsr.utils.registry import ARCH_REGISTRY

    from fke_basicsr.losses.freq_loss import FreqLoss
    from fke_basicsr.archs.outputs import DeblurOutputs
    from fke_basicsr.ops.pyramid import gaussian_pyramid
    torch.set_num_threads(threads)
    net_opt = dict(opt['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt).train()
    optim = torch.optim.AdamW(net.parameters(), lr=1e-4)
    freq = FreqLoss(0.01)
    train = opt['datasets']['train']
    x = torch.rand(train['batch_size_per_gpu'], 3, train['gt_size'], train['gt_size'])
    x_half = gaussian_pyramid(x, 2)[1]
    times = []
    for _ in range(warmup + steps):
        t0 = time.perf_counter()
        out: DeblurOutputs = net(x)
        full, half = out.full, out.half
        loss = sum((o - x).abs().mean() + freq(o, x) for o in full) + sum(
            (o - x_half).abs().mean() + freq(o, x_half) for o in half)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.01)
        optim.step()
        optim.zero_grad()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[warmup:])  # the first steps allocate and warm the caches
    return timed[len(timed) // 2]


def fit_iterations(budget_s: float, elapsed_s: float, seconds_per_iteration: float) -> int:
    """Iterations that fit what is left of the whole-job budget (at least 100, at most 20,000)."""
    left = budget_s - elapsed_s - RESERVE_S
    return int(min(max(STEP_SHARE * left / seconds_per_iteration, 100), 20000))


def train(opt_path: str, threads: int, iters: int) -> int:
    cmd = [sys.executable, osp.join('basicsr', 'train.py'), '-opt', opt_path, '--force_yml',
           f'train:total_iter={iters}', f'train:scheduler:T_max={iters}', f'val:val_freq={max(iters // 2, 1)}',
           f'logger:save_checkpoint_freq={iters}']
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    print('$', ' '.join(cmd), f'  (OMP_NUM_THREADS={threads})', flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # show progress and errors, not the option dump and the network print-out
        info = ' INFO: ' in line and any(k in line for k in ('iter:', 'Validation', 'Start training', 'End of training',
                                                              'Effective global batch'))
        if info or line.startswith(('\t # psnr', '\t # ssim')) or 'Error' in line or 'Traceback' in line:
            print(line.rstrip(), flush=True)
    return proc.wait()


def evaluate(opt_path: str, threads: int) -> tuple[float, float, float, float]:
    """Mean (PSNR_in, SSIM_in, PSNR_out, SSIM_out) over the validation pairs, printing one row per image."""
    opt = load_opt(opt_path)  # imports fke_basicsr (shims) before basicsr
    import cv2
    import torch

    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import img2tensor, tensor2img
    from basicsr.utils.registry import ARCH_REGISTRY

    from fke_basicsr.protocol import TestTimeProtocol

    torch.set_num_threads(threads)
    net_opt = dict(opt['network_g'])
    net = ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)
    weights = osp.join(ROOT, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
    net.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True)['params'], strict=True)
    net.eval()
    val = opt['datasets']['val']
    gt_paths = sorted(glob.glob(osp.join(ROOT, val['dataroot_gt'], '*.png')))
    rows = []
    print(f'\n{"image":<10}{"PSNR in":>10}{"PSNR out":>10}{"SSIM in":>10}{"SSIM out":>10}')
    for gt_path in gt_paths:
        name = osp.basename(gt_path)
        gt = cv2.imread(gt_path)
        blur = cv2.imread(osp.join(ROOT, val['dataroot_lq'], name))
        x = img2tensor(blur.astype('float32') / 255.0, bgr2rgb=True, float32=True)[None]
        with torch.no_grad():  # zero padding to the multiple, whole image: as validation
            out = tensor2img(TestTimeProtocol.from_options(opt.get('val'), net, pad_mode='constant')(net, x))
        r = (calculate_psnr(blur, gt, 0), calculate_ssim(blur, gt, 0), calculate_psnr(out, gt, 0),
             calculate_ssim(out, gt, 0))
        rows.append(r)
        print(f'{osp.splitext(name)[0]:<10}{r[0]:>10.2f}{r[2]:>10.2f}{r[1]:>10.4f}{r[3]:>10.4f}')
    means = tuple(sum(r[i] for r in rows) / len(rows) for i in range(4))
    print(f'{"mean":<10}{means[0]:>10.2f}{means[2]:>10.2f}{means[1]:>10.4f}{means[3]:>10.4f}')
    return means


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description='Train and evaluate a small DeepRFTv2 on the generated Demo dataset.')
    p.add_argument('--opt', default=DEFAULT_OPT, help='training options file (relative to the repository root)')
    p.add_argument('--minutes', type=float, default=14.0,
                   help='wall-clock budget of the whole job, dataset build included (default 14)')
    p.add_argument('--iters', type=int, default=None, help='train exactly this many iterations (no time budget)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch threads (default: the fastest of 1, 2 and torch\'s default, timed)')
    p.add_argument('--skip-train', action='store_true', help='only evaluate the existing net_g_latest.pth')
    args = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    start = time.time()
    from make_demo_dataset import make_demo_dataset  # same folder
    make_demo_dataset(osp.join(ROOT, 'datasets', 'Demo'))
    threads, iters = args.threads, args.iters
    if not args.skip_train:
        if threads is None or iters is None:  # timing picks the thread count and/or sizes the run
            opt = load_opt(args.opt)
            timings = {t: seconds_per_iter(opt, t) for t in ([threads] if threads else thread_candidates())}
            threads = min(timings, key=timings.get)
            print('Measured s/iteration: ' + ', '.join(f'{t} thread(s) {s:.2f}' for t, s in timings.items()),
                  flush=True)
        if iters is None:
            iters = fit_iterations(args.minutes * 60, time.time() - start, timings[threads])
            print(f'Training {iters} iterations with {threads} thread(s) ({args.minutes:g} min budget for the '
                  f'whole job).', flush=True)
        rc = train(args.opt, threads, iters)
        if rc != 0:
            print(f'Training failed (exit code {rc}); see experiments/<name>/train_*.log.', file=sys.stderr)
            return rc
    threads = threads or min(2, os.cpu_count() or 1)  # --skip-train without --threads: evaluation only
    psnr_in, ssim_in, psnr_out, ssim_out = evaluate(args.opt, threads)
    gain = psnr_out - psnr_in
    minutes = (time.time() - start) / 60
    print(f'\nValidation (RGB, uint8): blurry input {psnr_in:.2f} dB / SSIM {ssim_in:.4f} -> DeepRFTv2 output '
          f'{psnr_out:.2f} dB / SSIM {ssim_out:.4f}: gain {gain:+.2f} dB in {minutes:.1f} min total.')
    print(compare_with_reference(gain, None if args.skip_train else iters))
    return 0


if __name__ == '__main__':
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    sys.exit(main())
