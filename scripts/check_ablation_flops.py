"""Table 6's FLOPs column, checked without training: for every row, our MACs at 1×3×256×256 in the paper's
convention (ptflops 0.7.5's default PyTorch-module counting, re-implemented in fke_basicsr.profile) beside the
paper's value, with the % difference; conv+linear-only MACs and parameters are printed too.

    python scripts/check_ablation_flops.py                  # direct count at 256×256 (a few minutes on CPU)
    python scripts/check_ablation_flops.py --fast           # extrapolated from 64² and 128² (≈0.05 % off)
    python scripts/check_ablation_flops.py --table 7        # Table 7 rows (the paper prints no FLOPs there)

Exit status 1 if a Table 6 row is off by more than --tol percent (default 3).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import fke_basicsr  # noqa: E402,F401  (shims + registration)
from fke_basicsr.ablation import TABLE6, TABLE7, row_macs  # noqa: E402


def rows_report(table: int = 6, fast: bool = False, size: int = 256) -> list[dict]:
    """One dict per row with a network to count (memory rows share theirs with rows 12/15 and are skipped)."""
    rows = TABLE6 if table == 6 else TABLE7
    out = []
    for r in rows:
        if r.memory_mb is not None:
            continue
        m = row_macs(r, size, (size // 4, size // 2) if fast else None)
        diff = None if r.gflops is None else 100.0 * (m['ptflops'] / 1e9 - r.gflops) / r.gflops
        out.append(dict(key=r.key, name=r.name, paper=r.gflops, ptflops=m['ptflops'] / 1e9,
                        conv_linear=m['conv_linear'] / 1e9, params=m['params'] / 1e6, diff_pct=diff))
    return out


def format_report(report: list[dict], size: int = 256) -> str:
    head = (f"{'row':6s} {'configuration':34s} {'paper G':>8s} {'ours G':>8s} {'diff %':>7s} "
            f"{'conv+lin G':>10s} {'params M':>9s}")
    lines = [f'MACs at 1x3x{size}x{size}, ptflops PyTorch-module convention (FFT and selective scan uncounted)',
             head, '-' * len(head)]
    for d in report:
        paper = '-' if d['paper'] is None else f"{d['paper']:.2f}"
        diff = '-' if d['diff_pct'] is None else f"{d['diff_pct']:+.2f}"
        lines.append(f"{d['key']:6s} {d['name'][:34]:34s} {paper:>8s} {d['ptflops']:8.2f} {diff:>7s} "
                     f"{d['conv_linear']:10.2f} {d['params']:9.3f}")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--table', type=int, choices=(6, 7), default=6)
    ap.add_argument('--fast', action='store_true', help='extrapolate from size/4 and size/2 instead of counting')
    ap.add_argument('--size', type=int, default=256)
    ap.add_argument('--tol', type=float, default=3.0, help='allowed |difference| in percent')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = rows_report(args.table, args.fast, args.size)
    print(format_report(report, args.size))
    bad = [d['key'] for d in report if d['diff_pct'] is not None and abs(d['diff_pct']) > args.tol]
    if bad:
        print(f'outside ±{args.tol}%: {", ".join(bad)}')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
