"""Peak training memory and iterations/s of DeepRFTv2-S/-B, reversible columns on/off (paper Table 1/6 protocol).

Protocol (paper Table 1): one 3x256x256 patch (batch 1), fp32, train mode, forward + the DeblurModel
loss (L1 + 0.01 FreqLoss on the 4 full-res and 4 half-res outputs) + backward + AdamW step. Each configuration runs
in its own subprocess so peaks do not mix. On CUDA the peak is torch.cuda.max_memory_allocated after one warm-up
step (the paper reports 3,439 MB for -B); on CPU it is the process's peak RSS (includes Python, torch and the
model, so compare rows with each other, not with the paper's GPU figure).

    python scripts/benchmark_train.py [--variants S B] [--modes off on yml] [--size 256] [--steps 3] [--device auto]

Modes: off = plain autograd everywhere; on = every column's encoders, decoders and FKEs reversible;
yml = the authors' GoPro training flags (encoder/decoder reversible in column 1 only, FKEs in both).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
MODES = {'off': dict(encoder=False, decoder=False, fke=False), 'on': dict(encoder=True, decoder=True, fke=True),
         'yml': None}
YML_FLAGS = dict(save_memory_encoder=[False, True], save_memory_decoder=[False, True], save_memory_fke=[True, True])


def child(variant: str, mode: str, size: int, batch: int, steps: int, device: str, amp: str) -> dict:
    """One configuration, in this process: returns the measurements as a dict."""
    import resource

    import torch
    sys.path.insert(0, ROOT)
    import fke_basicsr  # noqa: F401
    from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY

    from fke_basicsr.archs.outputs import levels
    from fke_basicsr.models.deblur_model import _mean_loss
    from fke_basicsr.ops.pyramid import gaussian_pyramid

    dev = torch.device(device)
    kw = dict(YML_FLAGS) if mode == 'yml' else {}
    net = ARCH_REGISTRY.get('DeepRFTv2')(variant=variant, **kw)
    if mode != 'yml':
        net.set_save_memory(**MODES[mode])
    net = net.to(dev).train()
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.9, 0.9), weight_decay=1e-3)
    l1 = LOSS_REGISTRY.get('L1Loss')(loss_weight=1.0)
    fft = LOSS_REGISTRY.get('FreqLoss')(loss_weight=0.01)
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(batch, 3, size, size, generator=g).to(dev)
    lq = (gt + 0.05 * torch.randn(batch, 3, size, size, generator=g).to(dev)).clamp(0, 1)
    gt_half = gaussian_pyramid(gt, 2)[1]
    dtype = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[amp]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = net(lq)
        full, half = (levels(out) + [[]])[:2]
        full, half = [o.float() for o in full], [o.float() for o in half]
        loss = _mean_loss(l1, full, gt) + _mean_loss(fft, full, gt)
        if half:
            loss = loss + _mean_loss(l1, half, gt_half) + _mean_loss(fft, half, gt_half)
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == 'cuda':
            torch.cuda.synchronize()

    step()  # warm-up: optimiser state allocated, kernels chosen
    sync()
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = time.perf_counter() - t0
    res = dict(variant=variant, mode=mode, size=size, batch=batch, device=str(dev), amp=amp, params=params,
               it_per_s=steps / dt, s_per_it=dt / steps,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if dev.type == 'cuda':
        res.update(cuda_max_allocated_mib=torch.cuda.max_memory_allocated() / 2 ** 20,
                   cuda_max_reserved_mib=torch.cuda.max_memory_reserved() / 2 ** 20,
                   gpu=torch.cuda.get_device_name())
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--variants', nargs='+', default=['S', 'B'], choices=['S', 'B'])
    p.add_argument('--modes', nargs='+', default=['off', 'on'], choices=list(MODES))
    p.add_argument('--size', type=int, default=256)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--steps', type=int, default=3, help='timed steps after one warm-up step')
    p.add_argument('--device', default='auto', help="'auto' (cuda if available), 'cpu' or 'cuda'")
    p.add_argument('--amp', default='off', choices=['off', 'bf16', 'fp16'])
    p.add_argument('--threads', type=int, default=None, help='CPU threads per run (default: torch default)')
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    p.add_argument('--child', nargs=2, metavar=('VARIANT', 'MODE'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.size % 8:
        p.error(f'--size must be a multiple of 8 (the network input multiple), got {args.size}')
    if args.device == 'auto':
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.child:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        print('RESULT ' + json.dumps(child(*args.child, args.size, args.batch, args.steps, args.device, args.amp)))
        return 0

    rows = []
    env = dict(os.environ)
    if args.threads:
        env['OMP_NUM_THREADS'] = str(args.threads)
    for variant in args.variants:
        for mode in args.modes:
            cmd = [sys.executable, osp.abspath(__file__), '--child', variant, mode, '--size', str(args.size),
                   '--batch', str(args.batch), '--steps', str(args.steps), '--device', args.device, '--amp', args.amp]
            if args.threads:
                cmd += ['--threads', str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')), None)
            if proc.returncode != 0 or line is None:
                print(f'DeepRFTv2-{variant} reversible={mode}: failed\n{proc.stderr[-2000:]}', file=sys.stderr)
                continue
            rows.append(json.loads(line[7:]))
            r = rows[-1]
            mem = (f"CUDA max allocated {r['cuda_max_allocated_mib']:.0f} MiB (reserved {r['cuda_max_reserved_mib']:.0f})"
                   if 'cuda_max_allocated_mib' in r else f"CPU peak RSS {r['peak_rss_mib']:.0f} MiB")
            print(f"DeepRFTv2-{variant}  reversible={mode:<3}  {args.batch}x3x{args.size}x{args.size}  "
                  f"{r['it_per_s']:.3f} it/s ({r['s_per_it']:.2f} s/it)  {mem}  [{r['device']}, amp {args.amp}]",
                  flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return 0 if rows else 1


if __name__ == '__main__':
    sys.exit(main())
