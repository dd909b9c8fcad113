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

from fke_basicsr.io_utils import UserError

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
# Dataset keys BasicSR's datasets, loaders and samplers (and ours) read.
KNOWN_DATASET = {
    'name', 'type', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl', 'io_backend', 'gt_size',
    'use_hflip', 'use_rot', 'use_flip', 'use_shuffle', 'num_worker_per_gpu', 'batch_size_per_gpu',
    'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'num_prefetch_queue', 'phase',
    'scale', 'mean', 'std', 'color',
}
# (key, accepted types, description) of values whose wrong type otherwise fails only after training started.
_INT, _BOOL, _NUM, _STR = (int,), (bool,), (int, float), (str,)
TYPED_TOP = {'name': (_STR, 'a string'), 'manual_seed': (_INT, 'an int'), 'scale': (_INT, 'a positive int')}
TYPED_DATASET = {
    'batch_size_per_gpu': (_INT, 'a positive int'), 'num_worker_per_gpu': (_INT, 'an int >= 0'),
    'dataset_enlarge_ratio': (_INT, 'a positive int'), 'use_hflip': (_BOOL, 'true or false'),
    'use_rot': (_BOOL, 'true or false'), 'use_shuffle': (_BOOL, 'true or false'),
    'filename_tmpl': (_STR, "a string with '{}'"),
}
TYPED_TRAIN = {'total_iter': (_INT, 'a positive int'), 'warmup_iter': (_INT, 'an int (-1: no warm-up)'),
               'ema_decay': (_NUM, 'a number in [0, 1)')}
TYPED_LOGGER = {'print_freq': (_INT, 'a positive int'), 'save_checkpoint_freq': (_INT, 'a positive int'),
                'use_tb_logger': (_BOOL, 'true or false')}
TYPED_VAL = {'val_freq': (_NUM, 'a positive int'), 'save_img': (_BOOL, 'true or false')}


class OptionsError(UserError):
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
    """Relative dataroots and weight paths are taken from the working directory (BasicSR); else the repo root."""
    for dataset in (opt.get('datasets') or {}).values():
        if not isinstance(dataset, dict):
            continue
        for key in DATAROOT_KEYS:
            value = dataset.get(key)
            if isinstance(value, str) and not os.path.isabs(value):
                expanded = os.path.expanduser(value)
                if not os.path.exists(expanded) and os.path.exists(os.path.join(root_path, expanded)):
                    dataset[key] = os.path.join(str(root_path), expanded)
    paths = opt.get('path')
    if isinstance(paths, dict):  # the same for pretrained weights (e.g. experiments/<name>/models/...)
        for key in ('pretrain_network_g', 'pretrain_network_d', 'resume_state'):
            value = paths.get(key)
            if isinstance(value, str) and not os.path.isabs(value):
                expanded = os.path.expanduser(value)
                if not os.path.exists(expanded) and os.path.exists(os.path.join(root_path, expanded)):
                    paths[key] = os.path.join(str(root_path), expanded)


def _type_name(v: Any) -> str:
    return f'{v!r} ({type(v).__name__})'


def _check_typed(section: str, values: dict, schema: dict, source: str) -> None:
    for key, (types, what) in schema.items():
        if key not in values or values[key] is None:
            continue
        v = values[key]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        ok = ok or (types is _INT and isinstance(v, float) and v.is_integer())  # YAML `!!float 5e3` is an int here
        if not ok:
            hint = ' (remove the quotes)' if isinstance(v, str) else ''
            raise OptionsError(f'{source}: `{section}{key}` must be {what}, got {_type_name(v)}{hint}.')


def _check_positive(section: str, values: dict, keys: Iterable[str], source: str, minimum: int = 1) -> None:
    for key in keys:
        v = values.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < minimum:
            raise OptionsError(f'{source}: `{section}{key}` must be >= {minimum}, got {v}.')


def _check_network(net_key: str, net_opt: dict, registry, source: str) -> None:
    """Keys of network_g against the arch constructor's parameters (nearest name for a typo) and their types."""
    import inspect
    cls = registry.get(net_opt['type'])
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n in params if n != 'self']
    for key, value in net_opt.items():
        if key == 'type':
            continue
        if key not in params:
            from fke_basicsr.registry import close_names
            near = close_names(key, valid, n=1)
            fix = f"did you mean `{near[0]}`? " if near else ''
            raise OptionsError(f"{source}: `{net_key}.{key}` is not an option of {net_opt['type']}; {fix}Valid keys: "
                               f"{', '.join(valid)}.")
        expected = _annotation_kinds(params[key])
        if expected is None or value is None:
            continue
        if not any(_is_kind(value, kind) for kind in expected):
            raise OptionsError(f'{source}: `{net_key}.{key}` must be {" or ".join(expected)}, got {_type_name(value)}.')


_KINDS = {'int', 'float', 'bool', 'str', 'None', 'list'}


def _annotation_kinds(param) -> list[str] | None:
    """The kinds a constructor parameter accepts, from its annotation (or default); None when unknown."""
    import inspect
    ann = param.annotation
    if isinstance(ann, str) and ann:
        kinds = []
        for part in (p.strip() for p in ann.split('|')):
            part = 'list' if part.startswith(('Sequence[', 'list[', 'tuple[', 'List[', 'Tuple[')) else part
            if part not in _KINDS:
                return None
            kinds.append(part)
        return kinds
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return None
    for kind, t in (('bool', bool), ('int', int), ('float', float), ('str', str), ('list', (list, tuple))):
        if isinstance(default, t):
            return [kind]
    return None


def _is_kind(value: Any, kind: str) -> bool:
    if kind == 'bool':
        return isinstance(value, bool)
    if kind == 'int':
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == 'float':
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == 'str':
        return isinstance(value, str)
    if kind == 'list':
        return isinstance(value, (list, tuple))
    return value is None


def _check_pretrained(opt: dict, source: str) -> None:
    """path.pretrain_network_g exists and loads weights-only (checked before any folder is made)."""
    value = (opt.get('path') or {}).get('pretrain_network_g')
    if not value:
        return
    path = Path(os.path.expanduser(str(value)))
    if not path.is_file():
        raise OptionsError(f'{source}: path.pretrain_network_g: {value} does not exist; point it to a .pth file '
                           '(e.g. experiments/<name>/models/net_g_latest.pth) or set it to ~.')
    from fke_basicsr.checkpoints import check_loadable
    check_loadable(path, what='path.pretrain_network_g')


def validate_options(opt: dict, is_train: bool = True, source: str = 'options') -> None:
    """The one options check, run on the file as read, before BasicSR parses it or creates any folder.

    Keys (top level, path, logger, datasets.*, network_g against its arch's constructor, with the nearest
    valid name), value types, positive sizes, registered ``type`` names, dataset folders and their images,
    gt_size against the arch's size multiple, num_gpu against the GPUs present, the pretrained weights.
    Raises OptionsError naming the key and the fix on the first problem.
    """
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY

    _check_known('', opt.keys(), KNOWN_TOP_LEVEL)
    _check_known('path:', (opt.get('path') or {}).keys(), KNOWN_PATH)
    _check_known('logger:', (opt.get('logger') or {}).keys(), KNOWN_LOGGER)
    for required, example in (('name', 'name: my_experiment'), ('model_type', 'model_type: DeblurModel'),
                              ('num_gpu', 'num_gpu: 0  (CPU; 1 per GPU, or auto)'), ('datasets', 'datasets: {...}')):
        if required not in opt:
            raise OptionsError(f'{source}: missing required key `{required}`; add a line like `{example}`.')
    _check_typed('', opt, TYPED_TOP, source)
    _check_positive('', opt, ('scale',), source)
    num_gpu = opt['num_gpu']
    if num_gpu != 'auto':
        if isinstance(num_gpu, bool) or not isinstance(num_gpu, int) or num_gpu < 0:
            raise OptionsError(f'{source}: `num_gpu` must be an int >= 0 or auto, got {_type_name(num_gpu)}.')
        import torch
        present = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if num_gpu > present:
            raise OptionsError(f'{source}: `num_gpu: {num_gpu}` but {present} GPU(s) are present; set num_gpu: '
                               f'{present}{" (CPU)" if present == 0 else ""} or auto (or run it where {num_gpu} '
                               'GPUs are).')
    for section, schema in (('train', TYPED_TRAIN), ('logger', TYPED_LOGGER), ('val', TYPED_VAL)):
        if isinstance(opt.get(section), dict):
            _check_typed(f'{section}.', opt[section], schema, source)
            _check_positive(f'{section}.', opt[section],
                            [k for k in schema if k not in ('warmup_iter', 'ema_decay', 'use_tb_logger', 'save_img')],
                            source)
    _check_type('model_type', opt['model_type'], MODEL_REGISTRY, 'model')
    for phase, dataset in (opt['datasets'] or {}).items() if isinstance(opt['datasets'], dict) else ():
        if isinstance(dataset, dict):
            _check_typed(f'datasets.{phase}.', dataset, TYPED_DATASET, source)
            _check_positive(f'datasets.{phase}.', dataset, ('batch_size_per_gpu', 'dataset_enlarge_ratio'), source)
    if isinstance(opt.get('train'), dict):
        _check_typed('train.', opt['train'], TYPED_TRAIN, source)
    model_check = getattr(MODEL_REGISTRY.get(opt['model_type']), 'check_options', None)
    if callable(model_check):  # our models validate their train/val sections before any folder is made
        try:
            model_check({**opt, 'is_train': is_train})
        except ValueError as err:
            raise OptionsError(f'{source}: {err}') from None
    for net_key in ('network_g', 'network_d'):
        if net_key in opt:
            if not isinstance(opt[net_key], dict):
                raise OptionsError(f'{source}: `{net_key}` must be a mapping with a `type` and its options.')
            _check_type(f'{net_key}.type', opt[net_key].get('type'), ARCH_REGISTRY, 'arch')
            _check_network(net_key, opt[net_key], ARCH_REGISTRY, source)
    _check_pretrained(opt, source)
    multiple = getattr(ARCH_REGISTRY.get(opt['network_g']['type']), 'size_multiple', 1) if 'network_g' in opt else 1
    multiple = multiple if isinstance(multiple, int) and multiple > 0 else 1
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
        _check_known(f'datasets.{phase}.', dataset.keys(), KNOWN_DATASET)
        _check_typed(f'datasets.{phase}.', dataset, TYPED_DATASET, source)
        _check_positive(f'datasets.{phase}.', dataset, ('batch_size_per_gpu', 'dataset_enlarge_ratio'), source)
        _check_positive(f'datasets.{phase}.', dataset, ('num_worker_per_gpu',), source, minimum=0)
        if phase == 'train' and is_train and 'batch_size_per_gpu' not in dataset:
            raise OptionsError(f'{source}: `datasets.train.batch_size_per_gpu` is missing; add e.g. '
                               '`batch_size_per_gpu: 8`.')
        gt = dataset.get('gt_size')
        if phase == 'train' and isinstance(gt, int) and not isinstance(gt, bool) and (gt <= 0 or gt % multiple):
            raise OptionsError(f"{source}: `datasets.train.gt_size: {gt}` must be a positive multiple of {multiple} "
                               f"(the size multiple of {opt['network_g']['type']}); use {max(multiple, gt // multiple * multiple)}.")
        for key in DATAROOT_KEYS:
            value = dataset.get(key)
            if isinstance(value, str) and not os.path.exists(os.path.expanduser(value)):
                raise OptionsError(
                    f"datasets.{phase}.{key}: '{value}' does not exist (relative paths are taken from {Path.cwd()}). "
                    'Prepare the dataset first (see datasets/README.md and scripts/data_preparation/), or point '
                    'this key to where it lives.')
        from fke_basicsr.data.checks import check_dataset_files
        check_dataset_files(phase, dataset)
