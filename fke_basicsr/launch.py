"""What our entry points change around BasicSR's train/test pipelines (never BasicSR's files).

BasicSR 1.4.2 assumes CUDA in three places a plug-in meets on a CPU machine or under torchrun:
resume (``load_resume_state`` maps storages with ``.cuda()`` and looks under the working directory),
``init_dist`` (hard-coded NCCL and ``torch.cuda.set_device``), and DDP wrapping (``device_ids`` from the
current CUDA device). We swap those module-level functions for CPU-safe ones at launch time, and check the
options file before the pipeline creates any folder.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Callable, Sequence

import torch

import fke_basicsr  # noqa: F401  (shims + registration)
from fke_basicsr.archs.fke_attach_arch import expose_base_options
from fke_basicsr.convert_options import prepare_argv
from fke_basicsr.options import OptionsError, load_yaml, resolve_dataroots, validate_options

DIST_BACKEND_ENV = 'FKE_DIST_BACKEND'


def default_root() -> str:
    """The repository root when run from a checkout (parent of the package), else the working directory."""
    repo = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
    return repo if osp.isdir(osp.join(repo, 'options')) else os.getcwd()


def choose_backend(requested: str | None = None) -> str:
    """gloo on CPU, nccl when CUDA is usable; overridable by --dist-backend or FKE_DIST_BACKEND."""
    backend = requested or os.environ.get(DIST_BACKEND_ENV)
    if backend:
        return backend
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def init_dist(launcher: str, backend: str | None = None, **kwargs) -> None:
    """BasicSR's init_dist with a backend that works on CPU (torchrun sets RANK/LOCAL_RANK/WORLD_SIZE)."""
    import torch.distributed as dist
    backend = choose_backend(None if backend == 'nccl' and not torch.cuda.is_available() else backend)
    if launcher == 'pytorch':
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count())
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        from basicsr.utils.dist_util import _init_dist_slurm
        _init_dist_slurm(backend, **kwargs)
    else:
        raise ValueError(f'Invalid launcher {launcher!r}: use none, pytorch (torchrun) or slurm.')


def load_resume_state(opt: dict):
    """Find/load the training state to resume from, under root_path (not the CWD), mapped to the right device."""
    from basicsr.utils import check_resume, scandir
    state_path = None
    if opt['auto_resume']:
        state_dir = osp.join(opt['root_path'], 'experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            iters = [int(float(v.split('.state')[0])) for v in scandir(state_dir, suffix='state', recursive=False)
                     if v.split('.state')[0].replace('.', '', 1).isdigit()]
            if iters:
                state_path = osp.join(state_dir, f'{max(iters)}.state')
                opt['path']['resume_state'] = state_path
    elif opt['path'].get('resume_state'):
        state_path = opt['path']['resume_state']
    if state_path is None:
        return None
    if not osp.isfile(state_path):
        raise OptionsError(f'path.resume_state: {state_path} does not exist. Point it to a .state file under '
                           f'experiments/<name>/training_states/, or use --auto_resume.')
    if torch.cuda.is_available() and opt['num_gpu'] != 0:
        location = torch.device('cuda', torch.cuda.current_device())
    else:
        location = torch.device('cpu')
    state = torch.load(state_path, map_location=location, weights_only=False)
    check_resume(opt, state['iter'])
    return state


def model_to_device(self, net):
    """BaseModel.model_to_device that also wraps DDP on CPU (device_ids=None) under a gloo process group."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    net = net.to(self.device)
    if self.opt['dist']:
        find_unused = self.opt.get('find_unused_parameters', False)
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


def _checked_parse_options(original: Callable, is_train_default: bool) -> Callable:
    def parse_options(root_path, is_train=is_train_default):
        opt, args = original(root_path, is_train=is_train)
        resolve_dataroots(opt, root_path)
        expose_base_options(opt)  # FKEAttach: model classes read base-arch keys (SwinIRModel's window_size)
        validate_options(opt, is_train=is_train, source=args.opt)
        return opt, args
    return parse_options


def _normalise_argv(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """Accept --local-rank (torch.distributed.launch) and our --dist-backend; hand BasicSR what it parses."""
    out, backend = [], None
    it = iter(argv)
    for arg in it:
        if arg.startswith('--local-rank'):
            arg = arg.replace('--local-rank', '--local_rank', 1)
        if arg == '--dist-backend':
            backend = next(it, None)
            continue
        if arg.startswith('--dist-backend='):
            backend = arg.split('=', 1)[1]
            continue
        out.append(arg)
    return out, backend


def _precheck(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    args, _ = parser.parse_known_args(argv)
    if args.opt is None:
        raise OptionsError('Missing -opt: pass the options file, e.g. `python basicsr/train.py -opt '
                           'options/train/Demo/DeepRFTv2-Demo.yml`.')
    load_yaml(args.opt)


def run(pipeline: str, argv: Sequence[str] | None = None, root_path: str | None = None) -> int:
    """Run BasicSR's ``train_pipeline`` or ``test_pipeline`` with our fixes; returns the exit code."""
    import basicsr.models.base_model as base_model
    import basicsr.test as bt
    import basicsr.train as btr
    import basicsr.utils.options as bopt

    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ('-h', '--help') for a in argv):
        sys.argv = [f'basicsr/{pipeline}.py', '-h']
        getattr(btr if pipeline == 'train' else bt, 'parse_options')(root_path or default_root())
        return 0
    argv, backend = _normalise_argv(argv)
    if backend:
        os.environ[DIST_BACKEND_ENV] = backend
    root = osp.abspath(root_path or default_root())
    try:
        _precheck(argv)
        argv = prepare_argv(argv, pipeline, root)  # the authors'/ATD's files -> ours (docs/migrating.md)
        bopt.init_dist = init_dist
        btr.load_resume_state = load_resume_state
        base_model.BaseModel.model_to_device = model_to_device
        is_train = pipeline == 'train'
        checked = _checked_parse_options(bopt.parse_options, is_train)
        btr.parse_options = checked
        bt.parse_options = checked
        sys.argv = [f'basicsr/{pipeline}.py'] + argv
        (btr.train_pipeline if is_train else bt.test_pipeline)(root)
    except OptionsError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0
