"""Benchmark the selective-scan backends (docs/scan_backends.md): time and peak memory, one process per case.

    python scripts/benchmark_scan.py                         # CPU: ref, torch, numba (+ mambapy if importable)
    python scripts/benchmark_scan.py --device cuda --batch 8 # CUDA: torch, triton, mamba_ssm (if installed)
    PYTHONPATH=/tmp/mambapy python scripts/benchmark_scan.py # include mambapy from a throwaway install

Each case (implementation x length x fwd / fwd+bwd) runs in a fresh subprocess so its peak memory is its own:
CPU peak = ru_maxrss of the process, also shown above the RSS once the inputs exist; CUDA peak =
max_memory_allocated. Times are the best of --repeats after one warm-up; forward is timed under no_grad,
fwd+bwd is a forward with grad on every input plus backward of a weighted sum. Each time cell reads
"wall (process CPU time)" in ms: on a shared, busy machine the CPU time is the steadier figure.
The last table gives each backend's speed-up over 'torch' (ratio of the wall times, and of the CPU times).
Inputs follow EVSSM's call: B/C as (b, 1, N, L), A = -[1..N], Mamba's dt-bias init, softplus on, D = 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
IMPLS = ('ref', 'torch', 'numba', 'triton', 'mambapy', 'mamba')


def make_inputs(batch: int, channels: int, state: int, length: int, device: str):
    """EVSSM-like scan inputs, seeded."""
    import torch
    g = torch.Generator().manual_seed(0)
    dt_init = torch.exp(torch.rand(channels, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = {
        'u': torch.randn(batch, channels, length, generator=g),
        'delta': torch.randn(batch, channels, length, generator=g) * 0.5,
        'A': -torch.arange(1.0, state + 1).repeat(channels, 1),
        'B': torch.randn(batch, 1, state, length, generator=g),
        'C': torch.randn(batch, 1, state, length, generator=g),
        'D': torch.ones(channels),
        'delta_bias': dt_init + torch.log(-torch.expm1(-dt_init)),  # softplus^-1(dt)
    }
    return {k: v.to(device) for k, v in inputs.items()}


def mambapy_scan(u, delta, A, B, C, D, delta_bias):
    """The peer: mambapy's Blelloch pscan on (b, L, d, N) tensors, with the same Δ/B/C/D semantics."""
    import torch
    import torch.nn.functional as F
    from mambapy.pscan import pscan
    dt = F.softplus(delta + delta_bias[:, None]).transpose(1, 2)  # (b, L, d)
    x = u.transpose(1, 2)
    Bm, Cm = B[:, 0].transpose(1, 2), C[:, 0].transpose(1, 2)  # (b, L, N)
    decay = torch.exp(dt.unsqueeze(-1) * A)
    hs = pscan(decay, (dt * x).unsqueeze(-1) * Bm.unsqueeze(2))
    y = (hs @ Cm.unsqueeze(-1)).squeeze(-1)
    return (y + D * x).transpose(1, 2)


def scan_fn(impl: str):
    from fke_basicsr.ops.selective_scan import selective_scan
    if impl == 'mambapy':
        return mambapy_scan
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=impl)


def available(impl: str, device: str) -> tuple[bool, str]:
    """Whether an implementation can run here, and why not."""
    if impl == 'mambapy':
        try:
            import mambapy.pscan  # noqa: F401
        except ImportError:
            return False, 'mambapy not importable (pip install --target DIR mambapy; PYTHONPATH=DIR)'
        return True, ''
    if impl in ('numba', 'triton'):
        from fke_basicsr.ops.selective_scan import _fused_available
        if (impl == 'numba') != (device == 'cpu'):
            return False, 'CPU only' if impl == 'numba' else 'CUDA only'
        return _fused_available(impl)
    if impl == 'mamba':
        if device != 'cuda':
            return False, 'CUDA only'
        from fke_basicsr.ops.selective_scan import _mamba_kernel
        kernel, why = _mamba_kernel()
        return kernel is not None, why
    return True, ''


def worker(args: argparse.Namespace) -> None:
    """Run one case in this process and print one JSON line."""
    import torch
    torch.set_num_threads(args.threads)
    cuda = args.device == 'cuda'
    inputs = make_inputs(args.batch, args.channels, args.state, args.length, args.device)
    fn = scan_fn(args.impl)
    backward = args.mode == 'fwdbwd'
    if backward:
        for v in inputs.values():
            v.requires_grad_(True)
    weight = torch.randn(args.batch, args.channels, args.length, device=args.device)

    def once() -> tuple[float, float]:
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        if backward:
            (fn(**inputs) * weight).sum().backward()
            for v in inputs.values():
                v.grad = None
        else:
            with torch.no_grad():
                fn(**inputs)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu_start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = [once() for _ in range(args.repeats + 1)][1:]  # first run is a warm-up
    if cuda:
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'ms': 1e3 * min(t[0] for t in times), 'cpu_ms': 1e3 * min(t[1] for t in times),
                      'peak_mib': peak / 2 ** 20, 'extra_mib': (peak - base) / 2 ** 20}))


def run_case(args: argparse.Namespace, impl: str, length: int, mode: str) -> dict | str:
    """Spawn the worker for one case; its JSON result, or a short error string."""
    cmd = [sys.executable, os.path.abspath(__file__), '--worker', '--impl', impl, '--length', str(length),
           '--mode', mode, '--device', args.device, '--threads', str(args.threads), '--repeats', str(args.repeats),
           '--batch', str(args.batch), '--channels', str(args.channels), '--state', str(args.state)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return f'timeout {args.timeout}s'
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ['failed'])[-1][:60]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--lengths', default='1024,4096,16384,33024', help='comma-separated sequence lengths L')
    parser.add_argument('--impls', default='ref,torch,numba,triton,mambapy,mamba', help=f'subset of {",".join(IMPLS)}')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--channels', type=int, default=96, help='d_inner D')
    parser.add_argument('--state', type=int, default=8, help='d_state N')
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads in each case')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per case (best is reported)')
    parser.add_argument('--max-ref-L', type=int, default=512, help="longest L for 'ref' fwd+bwd (very slow)")
    parser.add_argument('--max-ref-fwd-L', type=int, default=16384, help="longest L for 'ref' forward")
    parser.add_argument('--timeout', type=int, default=900, help='seconds per case')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--impl', help=argparse.SUPPRESS)
    parser.add_argument('--length', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    impls = [i for i in args.impls.split(',') if i]
    if unknown := set(impls) - set(IMPLS):
        parser.error(f'--impls: unknown {sorted(unknown)}; choose from {IMPLS}')
    device_name = torch.cuda.get_device_name() if args.device == 'cuda' else f'CPU, {args.threads} threads'
    print(f'# selective scan, B={args.batch} D={args.channels} N={args.state}, {device_name}, '
          f'torch {torch.__version__}, best of {args.repeats}; ms as wall (CPU); peak MiB (extra over inputs)')
    for impl in impls:
        ok, why = available(impl, args.device)
        if not ok:
            print(f'# {impl}: skipped ({why})')
    impls = [i for i in impls if available(i, args.device)[0]]
    print('| impl | L | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |')
    print('|---|---|---|---|---|---|')
    results = {}
    for length in [int(v) for v in args.lengths.split(',')]:
        for impl in impls:
            cells = results[impl, length] = []
            for mode, limit in (('fwd', args.max_ref_fwd_L), ('fwdbwd', args.max_ref_L)):
                if impl == 'ref' and length > limit:
                    cells.append(None)
                    continue
                cells.append(run_case(args, impl, length, mode))
            fmt_ms = [('–' if c is None else c if isinstance(c, str) else f"{c['ms']:.1f} ({c['cpu_ms']:.0f})")
                      for c in cells]
            fmt_mem = [('–' if c is None or isinstance(c, str) else f"{c['peak_mib']:.0f} (+{c['extra_mib']:.0f})")
                       for c in cells]
            print(f'| {impl} | {length} | {fmt_ms[0]} | {fmt_ms[1]} | {fmt_mem[0]} | {fmt_mem[1]} |', flush=True)
    print_speedups(results, impls)


def print_speedups(results: dict, impls: list[str]) -> None:
    """Speed-up over the 'torch' backend per case: wall-time ratio (CPU-time ratio)."""
    if 'torch' not in impls:
        return
    print('\n| impl | L | fwd speed-up over torch | fwd+bwd speed-up over torch |')
    print('|---|---|---|---|')
    for (impl, length), cells in results.items():
        if impl == 'torch':
            continue
        out = []
        for c, base in zip(cells, results['torch', length]):
            ok = isinstance(c, dict) and isinstance(base, dict)
            out.append(f"{base['ms'] / c['ms']:.1f}x ({base['cpu_ms'] / max(c['cpu_ms'], 1e-9):.1f}x)" if ok else '–')
        print(f'| {impl} | {length} | {out[0]} | {out[1]} |')


if __name__ == '__main__':
    main()
