"""CPU inference benchmark (docs/performance.md, Inference on CPU): seconds per image and peak RSS.

Cases (randomly initialised networks; weights do not change the cost):
  deeprftv2_b_720p   DeepRFTv2-B, one 1280×720 RGB image, --tile 512 --tile-overlap 128 (6 tiles)
  atd_light_fke_x4   ATD-light + FKE ×4 (options/test/SR/test_ATD_light_FKE_SRx4.yml network), one 320×180 image

Each case runs `python -m fke_basicsr.infer` logic in a fresh subprocess, so the reported peak RSS (ru_maxrss of that
process: Python, torch, the model and the inference) belongs to that case alone.

    python scripts/benchmark_infer.py [--cases deeprftv2_b_720p atd_light_fke_x4] [--threads 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Sequence

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))

ATD_LIGHT_FKE_X4 = ['--set', 'upscale=4', '--set', 'embed_dim=48', '--set', 'depths=[6,6,6,6]',
                    '--set', 'num_heads=[4,4,4,4]', '--set', 'window_size=16', '--set', 'category_size=128',
                    '--set', 'num_tokens=64', '--set', 'reducted_dim=8', '--set', 'convffn_kernel_size=7',
                    '--set', 'mlp_ratio=1', '--set', 'fke=true']
CASES = {
    'deeprftv2_b_720p': dict(size=(720, 1280), args=['--arch', 'DeepRFTv2', '--variant', 'B', '--tile', '512',
                                                     '--tile-overlap', '128']),
    'atd_light_fke_x4': dict(size=(180, 320), args=['--arch', 'ATD', *ATD_LIGHT_FKE_X4, '--tile', '64',
                                                    '--tile-overlap', '16', '--tile-batch', '16']),
}


def _child(case: str, threads: int) -> int:
    """Run one case in this process and print one JSON line."""
    sys.path.insert(0, ROOT)
    import numpy as np
    import cv2

    from fke_basicsr import infer

    spec = CASES[case]
    h, w = spec['size']
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = osp.join(tmp, 'in'), osp.join(tmp, 'out')
        os.makedirs(src)
        rng = np.random.default_rng(0)
        small = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.float32)
        cv2.imwrite(osp.join(src, 'img.png'), cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
                    .clip(0, 255).round().astype(np.uint8))
        t0 = time.perf_counter()
        code = infer.main(['-i', src, '-o', dst, *spec['args'], '--device', 'cpu', '--threads', str(threads),
                           '--quiet'])
        seconds = time.perf_counter() - t0
        out = cv2.imread(osp.join(dst, 'img.png'))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'case': case, 'exit_code': code, 'input_hw': [h, w],
                      'output_hw': None if out is None else list(out.shape[:2]), 'seconds_per_image': seconds,
                      'peak_rss_bytes': peak, 'threads': threads}))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 3 and argv[0] == '--_child':
        return _child(argv[1], int(argv[2]))
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--json', help='write the results here')
    args = p.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    machine = f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f} at start'
    print(f'machine: {machine}')
    results = []
    for case in args.cases:
        proc = subprocess.run([sys.executable, osp.abspath(__file__), '--_child', case, str(args.threads)],
                              capture_output=True, text=True, cwd=ROOT)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
        if proc.returncode or not lines:
            print(f'{case}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}', file=sys.stderr)
            return 1
        r = json.loads(lines[-1])
        results.append(r)
        print(f"{case}: {r['input_hw'][1]}x{r['input_hw'][0]} -> {r['output_hw'][1]}x{r['output_hw'][0]}, "
              f"{r['seconds_per_image']:.1f} s/image, peak RSS {r['peak_rss_bytes'] / 2 ** 30:.2f} GiB, "
              f"{r['threads']} threads", flush=True)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': machine, 'results': results}, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
