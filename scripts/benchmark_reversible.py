"""Peak memory of forward+backward through a 2-column, 3-level NAF-like stack, reversible on/off (docs/performance.md).

The stack mirrors the DeepRFTv2 max-scale encoder: channels 32/64/128 at strides 1/2/4, 2x2 stride-2 conv
down-sampling in front of levels 1 and 2, ``--blocks`` NAF-like blocks per level (default 1/4/8 as in
DeepRFTv2), column 1 carrying column 0's outputs. On CUDA the figure is ``torch.cuda.max_memory_allocated``
above what was allocated before the forward pass; on CPU each case runs in its own subprocess and reports its
peak RSS (``ru_maxrss``) and the part of it above the RSS measured just before the forward pass.

    python scripts/benchmark_reversible.py                 # 128² and 256², CUDA if available
    python scripts/benchmark_reversible.py --device cpu --sizes 256 --blocks 2   # 2 blocks at every level
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fke_basicsr.ops.reversible import reversible_column  # noqa: E402


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels (NAFNet), eps 1e-6."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        return (x - mu) / (var + 1e-6).sqrt() * self.weight[:, None, None] + self.bias[:, None, None]


class NAFLike(nn.Module):
    """x + conv1x1(gate(dwconv3x3(conv1x1_{c->2c}(LN(x))))), the gate being a*b of the two channel halves."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(c)
        self.expand = nn.Conv2d(c, 2 * c, 1)
        self.dw = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.project = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.dw(self.expand(self.norm(x))).chunk(2, 1)
        return x + self.project(a * b)


class Level(nn.Module):
    """Optional 2x2 stride-2 down-sampling conv, then NAF-like blocks."""

    def __init__(self, cin: int, c: int, blocks: int) -> None:
        super().__init__()
        self.down = nn.Identity() if cin == c else nn.Conv2d(cin, c, 2, 2, bias=False)
        self.blocks = nn.Sequential(*[NAFLike(c) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.down(x))


class Column(nn.Module):
    """One encoder column: c_j = alpha_j p_j + level_j(c_{j-1})."""

    def __init__(self, chs: tuple[int, ...], blocks: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(Level(chs[max(j - 1, 0)], c, b) for j, (c, b) in enumerate(zip(chs, blocks)))
        self.alphas = nn.ParameterList(nn.Parameter(torch.full((1, c, 1, 1), 0.5)) for c in chs)

    def forward(self, x: Tensor, prev: list, save_memory: bool) -> list[Tensor]:
        return reversible_column(list(self.levels), list(self.alphas), x, prev, save_memory=save_memory)


class Stack(nn.Module):
    def __init__(self, chs=(32, 64, 128), blocks: tuple[int, ...] = (1, 4, 8), columns: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, chs[0], 3, padding=1)
        self.columns = nn.ModuleList(Column(chs, blocks) for _ in range(columns))

    def forward(self, img: Tensor, save_memory: bool) -> list[Tensor]:
        x = self.embed(img)
        c: list = [0] * len(self.columns[0].levels)
        for col in self.columns:
            c = col(x, c, save_memory)
        return c


def rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def run_case(size: int, reversible: bool, blocks: tuple[int, ...], device: str) -> dict:
    torch.manual_seed(0)
    net = Stack(blocks=blocks).to(device)
    img = torch.randn(1, 3, size, size, device=device)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_mib()
    t0 = time.perf_counter()
    out = net(img, save_memory=reversible)
    sum(o.float().mean() for o in out).backward()
    if device == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        result = {'peak_mib': peak, 'above_base_mib': peak - base / 2**20}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB
        result = {'peak_mib': peak, 'above_base_mib': peak - base}
    result['seconds'] = time.perf_counter() - t0
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[128, 256])
    ap.add_argument('--blocks', type=int, nargs='+', default=[1, 4, 8],
                    help='NAF-like blocks per level: one number for all levels, or three (default: DeepRFTv2 1 4 8)')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--child', nargs=2, metavar=('SIZE', 'REVERSIBLE'), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if len(args.blocks) not in (1, 3):
        ap.error(f'--blocks: expected 1 or 3 numbers, got {len(args.blocks)}')
    args.blocks = tuple(args.blocks * 3 if len(args.blocks) == 1 else args.blocks)
    if args.child:   # one CPU case in a fresh process, so ru_maxrss is this case's peak
        print(json.dumps(run_case(int(args.child[0]), args.child[1] == '1', args.blocks, 'cpu')))
        return
    print(f'device={args.device}  columns=2  levels=32/64/128 ch at strides 1/2/4  '
          f'blocks/level={"/".join(map(str, args.blocks))}')
    head = f'{"size":>6} {"reversible":>10} {"peak MiB":>10} {"above base MiB":>15} {"seconds":>8}'
    print(head + f' {"on/off (above base)":>20}')
    for size in args.sizes:
        res = {}
        for rev in (False, True):
            if args.device == 'cuda':
                res[rev] = run_case(size, rev, args.blocks, 'cuda')
            else:
                cmd = [sys.executable, os.path.abspath(__file__), '--blocks', *map(str, args.blocks),
                       '--threads', str(args.threads), '--child', str(size), str(int(rev))]
                # a fixed mmap threshold stops glibc from serving freed large blocks from its heap, which would
                # keep them resident and make RSS track the high-water mark of the heap, not of live tensors
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='131072')
                res[rev] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                                     env=env).stdout)
            r = res[rev]
            ratio = f'{res[True]["above_base_mib"] / res[False]["above_base_mib"]:.1%}' if rev else ''
            print(f'{size:>6} {"on" if rev else "off":>10} {r["peak_mib"]:>10.1f} {r["above_base_mib"]:>15.1f} '
                  f'{r["seconds"]:>8.2f} {ratio:>20}')


if __name__ == '__main__':
    main()
