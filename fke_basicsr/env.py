"""Environment report: ``python -m fke_basicsr.env [--json]``.

Versions of the stack, CUDA availability, the selective-scan backend that will be used on each device (and why:
mamba → triton → torch on CUDA, numba → torch on CPU, or what FKE_SCAN_BACKEND asks for; docs/scan_backends.md),
the torchvision shim state and every name this package registered in BasicSR's registries.
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import sys


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return 'not installed'


def registered_names() -> dict[str, list[str]]:
    """Names that fke_basicsr added to each BasicSR registry (by defining module)."""
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY
    out = {}
    for reg in (ARCH_REGISTRY, LOSS_REGISTRY, MODEL_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY):
        out[reg._name] = sorted(k for k, v in reg._obj_map.items()
                                if getattr(v, '__module__', '').startswith('fke_basicsr.'))
    return out


def report() -> dict:
    import torch

    import fke_basicsr
    from fke_basicsr import compat
    from fke_basicsr.ops import selective_scan as scan

    cuda = torch.cuda.is_available()
    info = {
        'python': platform.python_version(),
        'platform': platform.platform(),
        'fke_basicsr': fke_basicsr.__version__,
        'torch': torch.__version__,
        'torchvision': _version('torchvision'),
        'numpy': _version('numpy'),
        'basicsr': _version('basicsr'),
        'opencv': _version('opencv-python') if _version('opencv-python') != 'not installed'
        else _version('opencv-python-headless'),
        'mamba-ssm': _version('mamba-ssm'),
        'triton': _version('triton'),
        'numba': _version('numba'),
        'torchvision_cpp_ops': compat.torchvision_ops_available(),
        'cuda_available': cuda,
        'cuda_devices': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        'threads': torch.get_num_threads(),
    }
    scan_backends = {}
    for device in (['cpu', 'cuda'] if cuda else ['cpu']):
        try:
            name, why = scan.resolve_backend(device)
        except (RuntimeError, ValueError) as err:  # e.g. FKE_SCAN_BACKEND=mamba on a machine without the kernel
            name, why = 'unavailable', str(err)
        scan_backends[device] = {'backend': name, 'reason': why}
    info['selective_scan'] = scan_backends
    info['selective_scan_env'] = scan.SCAN_BACKEND_ENV
    info['registered'] = registered_names()
    return info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--json', action='store_true', help='print the report as JSON')
    args = parser.parse_args(argv)
    info = report()
    if args.json:
        print(json.dumps(info, indent=2))
        return
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == 'selective_scan':
            for device, choice in value.items():
                print(f"{'selective_scan[' + device + ']':<{width}}  {choice['backend']}  ({choice['reason']})")
        elif key == 'registered':
            for reg, names in value.items():
                print(f"{'registered ' + reg:<{width}}  {', '.join(names) or '-'}")
        else:
            print(f'{key:<{width}}  {value}')


if __name__ == '__main__':
    sys.exit(main())
