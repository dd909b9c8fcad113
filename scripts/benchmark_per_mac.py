"""Time per MAC of DeepRFTv2-B/-S against a plain NAFBlock UNet (docs/scan_backends.md).

The baseline is NAFNet-64's GoPro layout built from this package's own NAFBlock: width 64, encoder blocks
[1, 1, 1, 28], one middle block, decoder blocks [1, 1, 1, 1], 2x2 stride-2 down convs, 1x1 conv + PixelShuffle
up, additive skips and a global residual. Everything runs in one process: for each repeat every network is timed
once, in turn (interleaved, so a busy machine slows all of them alike), and medians are reported. DeepRFTv2 runs
once per selective-scan backend given, so "before" (torch) and "after" (numba / triton) come from the same run.

    python scripts/benchmark_per_mac.py                           # CPU, 2 threads, eval 256² and a training step
    python scripts/benchmark_per_mac.py --backends torch,numba --repeats 5 --no-train
    python scripts/benchmark_per_mac.py --device cuda --backends torch,triton --threads 0

MACs follow the paper's convention (ptflops' module hooks, fke_basicsr.profile), counted on the eval forward; the
per-MAC ratio is (seconds / MAC of the network) / (seconds / MAC of the NAFBlock UNet). The training step is
forward with grad + the sum of L1 means of every output + backward (no optimiser step), on one 256² patch.
"""
from __future__ import annotations

import argparse
import os.path as osp
import platform
import statistics
import sys
import time
from typing import Callable

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402


class NAFUNet(nn.Module):
    """A plain NAFBlock UNet in NAFNet's layout (no EVSS, no FKE, no multi-scale columns)."""

    def __init__(self, width: int = 64, enc: tuple[int, ...] = (1, 1, 1, 28), middle: int = 1,
                 dec: tuple[int, ...] = (1, 1, 1, 1)):
        super().__init__()
        from fke_basicsr.archs.blocks import NAFBlock
        self.intro = nn.Conv2d(3, width, 3, padding=1)
        self.ending = nn.Conv2d(width, 3, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle)])
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
        self.size_multiple = 2 ** len(enc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.middle(y)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            y = dec(up(y) + skip)
        return self.ending(y) + x


def _outputs(out) -> list[torch.Tensor]:
    from fke_basicsr.profile import _outputs as every_tensor
    return every_tensor(out)


def _timer(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def run(fn: Callable[[], None]) -> float:
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--variants', default='B,S', help='DeepRFTv2 variants, comma-separated')
    parser.add_argument('--backends', default='torch,numba',
                        help="selective-scan backends to time DeepRFTv2 with (before/after), e.g. 'torch,numba'")
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=3, help='interleaved timed repeats (median reported)')
    parser.add_argument('--train-repeats', type=int, default=2)
    parser.add_argument('--no-train', action='store_true', help='time only the eval forward')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (0 = leave the default)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    args = parser.parse_args(argv)

    import fke_basicsr  # noqa: F401  (registers the architectures)
    from basicsr.utils.registry import ARCH_REGISTRY

    from fke_basicsr.archs.blocks import set_scan_backend
    from fke_basicsr.ops.selective_scan import resolve_backend
    from fke_basicsr.profile import count_macs

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    backends = [b for b in args.backends.split(',') if b]
    for b in backends:
        try:
            resolve_backend(device, b)
        except (RuntimeError, ValueError) as err:
            parser.error(f'--backends: {err}')

    torch.manual_seed(0)
    nets: dict[str, tuple[nn.Module, str | None]] = {'NAFBlock-UNet-64': (NAFUNet(), None)}
    for v in [v for v in args.variants.split(',') if v]:
        net = ARCH_REGISTRY.get('DeepRFTv2')(variant=v)
        for b in backends:
            nets[f'DeepRFTv2-{v} [{b}]'] = (net, b)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    macs = {}
    for name, (net, _) in nets.items():
        key = name.split(' [')[0]
        if key not in macs:
            macs[key] = count_macs(net.eval(), x).macs_ptflops
    x = x.to(device)
    for net, _ in nets.values():
        net.to(device)
    timer = _timer(device)

    def eval_fn(net: nn.Module, backend: str | None) -> Callable[[], None]:
        def fn() -> None:
            set_scan_backend(net, backend).eval()
            with torch.no_grad():
                net(x)
        return fn

    def train_fn(net: nn.Module, backend: str | None) -> Callable[[], None]:
        def fn() -> None:
            set_scan_backend(net, backend).train()
            net.zero_grad(set_to_none=True)
            sum(o.float().abs().mean() for o in _outputs(net(x))).backward()
        return fn

    where = (torch.cuda.get_device_name() if device.type == 'cuda'
             else f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads')
    print(f'# per-MAC cost vs a NAFBlock UNet, {args.size}x{args.size}, batch 1, fp32, {where}, '
          f'torch {torch.__version__}; medians of interleaved repeats')
    modes = [('eval forward', eval_fn, args.repeats)] + ([] if args.no_train else
                                                         [('training step', train_fn, args.train_repeats)])
    for mode, make, repeats in modes:
        fns = {name: make(net, b) for name, (net, b) in nets.items()}
        for fn in fns.values():  # warm-up (kernel compile / cache load, allocator)
            fn()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                times[name].append(timer(fn))
        base = statistics.median(times['NAFBlock-UNet-64']) / macs['NAFBlock-UNet-64']
        print(f'\n## {mode} ({repeats} repeats)')
        print('| network | G MACs | median s | s per T MAC | per-MAC ratio vs NAFBlock UNet |')
        print('|---|---|---|---|---|')
        for name, ts in times.items():
            m = macs[name.split(' [')[0]]
            med = statistics.median(ts)
            print(f'| {name} | {m / 1e9:.1f} | {med:.3f} | {med / m * 1e12:.2f} | {med / m / base:.2f}x |',
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
