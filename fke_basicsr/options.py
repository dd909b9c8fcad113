"""Options checks run before BasicSR touches the file system: a newcomer's first errors, each one paragraph.

BasicSR reads a YAML file into a dict and resolves ``type:`` names through its registries only when it builds
each piece, often after an experiment folder was made and minutes were spent on data loading. Here the whole
file is checked up front: the file exists and parses, every ``type`` is registered (with the close names when
it is not), dataset folders exist, and top-level keys are ones BasicSR reads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import yaml

__all__ = ['OptionsError', 'load_yaml', 'validate_options', 'resolve_dataroots']

# Top-level keys BasicSR 1.4.2 (and our models) read; anything else is most likely a typo.
KNOWN_TOP_LEVEL = {
    'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'network_d', 'path', 'train',
    'val', 'logger', 'dist_params', 'find_unused_parameters', 'amp', 'tile', 'is_train', 'dist', 'rank',
    'world_size', 'auto_resume', 'root_path', 'cudnn_benchmark', 'gt_for_train',
}
KNOWN_PATH = {
    'pretrain_network_g', 'pretrain_network_d', 'param_key_g', 'param_key_d', 'strict_load_g', 'strict_load_d',
    'resume_state', 'experiments_root', 'results_root', 'models', 'training_states', 'log', 'visualization',
    'pretrain_network_g_ema',
}
KNOWN_LOGGER = {'print_freq', 'save_checkpoint_freq', 'use_tb_logger', 'wandb'}
DATAROOT_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file')


class OptionsError(ValueError):
    """An options file that cannot run; the message says which key/file and what to change."""


def _close(name: str, choices: Iterable[str], n: int = 5) -> str:
    from fke_basicsr.registry import did_you_mean
    return did_you_mean(name, choices, n=n)


def load_yaml(path: str | os.PathLike) -> dict:
    """Read an options file; a missing file or invalid YAML raises OptionsError naming the file."""
    path = Path(path)
    if not path.is_file():
        here = Path('options')
        hint = ''
        if here.is_dir():
            cands = [str(p) for p in here.rglob('*.yml')]
            hint = _close(str(path), cands, n=3)
        raise OptionsError(f'Options file not found: {path} (looked relative to {Path.cwd()}). Pass the path of a '
                           f'YAML file with -opt, e.g. -opt options/train/Demo/DeepRFTv2-Demo.yml.{hint}')
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
        problem = getattr(err, 'problem', None) or str(err).splitlines()[0]
        raise OptionsError(f'Options file {path} is not valid YAML{where}: {problem}. Check the indentation '
                           f'(spaces, not tabs) and the quoting of that line.') from None
    if not isinstance(opt, dict):
        raise OptionsError(f'Options file {path} must hold a mapping of keys (name, model_type, datasets, '
                           f'network_g, ...); it holds a {type(opt).__name__}.')
    return opt


def _check_type(where: str, type_name: Any, registry, kind: str) -> None:
    if type_name is None:
        raise OptionsError(f'{where}: missing `type`. Give the name of a registered {kind}.')
    if type_name not in registry:
        names = list(registry.keys())
        raise OptionsError(f"{where}: type '{type_name}' is not a registered {kind}.{_close(str(type_name), names)} "
                           f'Registered {kind}s: {", ".join(sorted(names))}. '
                           f'(Run `python -m fke_basicsr.env` to list every registered name.)')


def _check_known(section: str, keys: Iterable[str], known: set) -> None:
    for key in keys:
        if key not in known:
            raise OptionsError(f"Unknown option `{section}{key}`.{_close(key, known)} Remove it or fix its "
                               f'spelling; known keys here: {", ".join(sorted(known))}.')


def resolve_dataroots(opt: dict, root_path: str | os.PathLike) -> None:
    """Relative dataroots are taken from the working directory (BasicSR); fall back to the repo root."""
    for dataset in (opt.get('datasets') or {}).values():
        if not isinstance(dataset, dict):
            continue
        for key in DATAROOT_KEYS:
            value = dataset.get(key)
            if isinstance(value, str) and not os.path.isabs(value):
                expanded = os.path.expanduser(value)
                if not os.path.exists(expanded) and os.path.exists(os.path.join(root_path, expanded)):
                    dataset[key] = os.path.join(str(root_path), expanded)


def validate_options(opt: dict, is_train: bool = True, source: str = 'options') -> None:
    """Check registered types, dataset folders and top-level keys; raise OptionsError on the first problem."""
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    _check_known('', opt.keys(), KNOWN_TOP_LEVEL)
    _check_known('path:', (opt.get('path') or {}).keys(), KNOWN_PATH)
    _check_known('logger:', (opt.get('logger') or {}).keys(), KNOWN_LOGGER)
    for required in ('name', 'model_type', 'num_gpu', 'datasets'):
        if required not in opt:
            raise OptionsError(f'{source}: missing required key `{required}`.')
    _check_type('model_type', opt['model_type'], MODEL_REGISTRY, 'model')
    model_check = getattr(MODEL_REGISTRY.get(opt['model_type']), 'check_options', None)
    if callable(model_check):  # our models validate their train/val sections before any folder is made
        try:
            model_check({**opt, 'is_train': is_train})
        except ValueError as err:
            raise OptionsError(f'{source}: {err}') from None
    for net_key in ('network_g', 'network_d'):
        if net_key in opt:
            _check_type(f'{net_key}.type', (opt[net_key] or {}).get('type'), ARCH_REGISTRY, 'arch')
    for key, value in (opt.get('train') or {}).items():
        if key.endswith('_opt') and isinstance(value, dict):
            _check_type(f'train.{key}.type', value.get('type'), LOSS_REGISTRY, 'loss')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        _check_type(f'val.metrics.{name}.type', (metric or {}).get('type'), METRIC_REGISTRY, 'metric')
    datasets = opt['datasets'] or {}
    if is_train and 'train' not in datasets:
        raise OptionsError(f'{source}: `datasets` has no `train` entry; a training file needs one.')
    for phase, dataset in datasets.items():
        if not isinstance(dataset, dict):
            raise OptionsError(f'datasets.{phase} must be a mapping with a `type` and its dataroots.')
        _check_type(f'datasets.{phase}.type', dataset.get('type'), DATASET_REGISTRY, 'dataset')
        for key in DATAROOT_KEYS:
            value = dataset.get(key)
            if isinstance(value, str) and not os.path.exists(os.path.expanduser(value)):
                raise OptionsError(
                    f"datasets.{phase}.{key}: '{value}' does not exist (relative paths are taken from {Path.cwd()}). "
                    'Prepare the dataset first (see datasets/README.md and scripts/data_preparation/), or point '
                    'this key to where it lives.')
