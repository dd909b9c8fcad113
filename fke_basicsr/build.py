"""Build a network from options (a YAML's ``network_g``, or an arch name + variant + overrides) and load weights.

The one model builder of the package: used by ``infer``, ``profile``, ``kernels`` and the table script.
Weights load through :func:`fke_basicsr.checkpoints.load_checkpoint` (ours, the authors' or DDP layouts, strict).
"""
from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

__all__ = ['parse_sets', 'network_options', 'build_model', 'sha256sum', 'load_model']


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """``key=value`` strings → kwargs; values parsed as YAML (``3``, ``true``, ``[1, 2]``, ``B``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        if '=' not in item or not item.split('=', 1)[0].strip():
            raise ValueError(f'--set: expected key=value, got {item!r}')
        key, value = item.split('=', 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def network_options(opt_path: str | None = None, arch: str | None = None, variant: str | None = None,
                    sets: dict[str, Any] | None = None) -> dict[str, Any]:
    """network_g options from a train/test YAML (``opt_path``) or from ``arch`` (+ ``variant``); ``sets`` override."""
    if (opt_path is None) == (arch is None):
        raise ValueError('give exactly one of opt (a YAML file) or arch (a registered arch name)')
    if opt_path is not None:
        from fke_basicsr.options import OptionsError, load_yaml

        opt = load_yaml(opt_path)
        net = opt.get('network_g')
        if not isinstance(net, dict) or 'type' not in net:
            raise OptionsError(f'Options file {opt_path} has no network_g mapping with a `type`; profile/infer need '
                               'the network section of a train or test YAML.')
        net = copy.deepcopy(net)
    else:
        net = {'type': arch}
    if variant is not None:
        net['variant'] = variant
    net.update(sets or {})
    from fke_basicsr.protocol import check_network_options

    check_network_options(net, 'network_g' if opt_path is None else f'{opt_path}: network_g')
    return net


def build_model(net_opt: dict[str, Any]) -> nn.Module:
    """Build a registered arch from a network_g dict (BasicSR's build_network; the dict is not modified)."""
    import fke_basicsr  # noqa: F401  (shims + registration before basicsr)
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    name = net_opt.get('type')
    if name not in ARCH_REGISTRY:
        from fke_basicsr.registry import did_you_mean

        raise ValueError(f"arch: '{name}' is not a registered arch.{did_you_mean(name, ARCH_REGISTRY.keys(), n=3)}")
    return build_network(copy.deepcopy(net_opt))


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def load_model(opt: str | None = None, arch: str | None = None, variant: str | None = None,
               weights: str | None = None, param_key: str | None = None, sets: dict[str, Any] | None = None,
               sha256: str | None = None, log: Callable[[str], Any] = print) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network from a YAML's network_g or an arch name and load weights strictly.

    With ``opt``, ``path.pretrain_network_g`` / ``path.param_key_g`` and the top-level ``scale`` of the YAML are
    used unless ``weights`` / ``param_key`` are given. Returns (model, info) with info = {'weights', 'sha256',
    'scale'}. Raises ValueError / FileNotFoundError / checkpoints.CheckpointMismatchError with readable messages.
    """
    net = network_options(opt, arch, variant, sets)
    info: dict[str, Any] = {'weights': weights, 'sha256': None, 'scale': None}
    if opt is not None:
        from fke_basicsr.options import load_yaml

        full = load_yaml(opt)
        path_opt = full.get('path') or {}
        info['weights'] = weights or path_opt.get('pretrain_network_g')
        param_key = param_key or path_opt.get('param_key_g')
        info['scale'] = full.get('scale')
    model = build_model(net)
    if info['weights']:
        path = Path(info['weights'])
        if not path.is_file():
            raise FileNotFoundError(f'weights: file not found: {path}')
        digest = sha256sum(path)
        info['sha256'] = digest
        log(f'weights: {path} (sha256 {digest})')
        if sha256 and digest.lower() != sha256.strip().lower():
            raise ValueError(f'weights: sha256 of {path} is {digest}, expected {sha256}; the file is not the '
                             f'checkpoint the options describe (re-download it or fix --sha256)')
        from fke_basicsr.checkpoints import load_checkpoint

        load_checkpoint(model, path, strict=True, param_key=param_key)
    else:
        log(f"warning: no weights given: running a randomly initialised {net['type']} (only useful for tests "
            'and benchmarks)')
    return model.eval(), info
