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
from fke_basicsr.io_utils import UserError, remove_stale_tmp
from fke_basicsr.options import OptionsError, load_yaml, resolve_dataroots, validate_options

DIST_BACKEND_ENV = 'FKE_DIST_BACKEND'
_ORIGINAL: dict = {}  # BasicSR's functions we wrap (kept so a second run() does not wrap twice)


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


def _state_candidates(opt: dict) -> list[str]:
    """Training states of ``opt['name']`` under root_path, newest iteration first (auto-resume)."""
    state_dir = osp.join(opt['root_path'], 'experiments', opt['name'], 'training_states')
    if not osp.isdir(state_dir):
        return []
    iters = []
    for v in os.listdir(state_dir):
        stem = v[:-len('.state')] if v.endswith('.state') else None
        if stem is not None and stem.isdigit() and osp.isfile(osp.join(state_dir, v)):
            iters.append(int(stem))
    return [osp.join(state_dir, f'{i}.state') for i in sorted(iters, reverse=True)]


def load_resume_state(opt: dict):
    """Find/load the training state to resume from, under root_path (not the CWD), weights-only, on the CPU.

    With --auto_resume the newest state is used; a truncated one (a killed save) is named in a warning and the
    previous intact one is used. Every state is loaded with ``weights_only=True``: a file holding code is refused.
    """
    from basicsr.utils import check_resume
    from fke_basicsr.checkpoints import CorruptCheckpointError, safe_load
    if opt['auto_resume']:
        remove_stale_tmp([osp.join(opt['root_path'], 'experiments', opt['name'], sub)
                          for sub in ('models', 'training_states')])
        for state_path in _state_candidates(opt):
            try:
                state = safe_load(state_path, what='training state')
            except CorruptCheckpointError as err:
                print(f'warning: {err} Skipping it.', file=sys.stderr)
                continue
            opt['path']['resume_state'] = state_path
            break
        else:
            return None
    elif opt['path'].get('resume_state'):
        state_path = opt['path']['resume_state']
        if not osp.isfile(state_path):
            raise OptionsError(f'path.resume_state: {state_path} does not exist. Point it to a .state file under '
                               f'experiments/<name>/training_states/, or use --auto_resume.')
        state = safe_load(state_path, what='path.resume_state')
    else:
        return None
    if not isinstance(state, dict) or 'iter' not in state or 'optimizers' not in state:
        raise OptionsError(f"{state_path}: not a BasicSR training state (no 'iter'/'optimizers' entries); point "
                           'path.resume_state to a .state file under experiments/<name>/training_states/.')
    _STREAM['resume'] = state
    check_resume(opt, state['iter'])
    return state


# The resumable data stream (fke_basicsr.data.stream): what create_train_val_dataloader needs to know.
_STREAM: dict = {}


def _stream_build_dataset(original: Callable) -> Callable:
    def build_dataset(dataset_opt):
        from fke_basicsr.data.stream import SeededItems
        return SeededItems(original(dataset_opt))
    return build_dataset


def _stream_sampler(dataset, num_replicas, rank, ratio=1):
    from fke_basicsr.data.stream import ResumableSampler
    sampler = ResumableSampler(dataset, num_replicas, rank, ratio, seed=_STREAM.get('seed', 0))
    _STREAM['sampler'] = sampler
    return sampler


def _stream_dataloaders(original: Callable) -> Callable:
    """BasicSR's create_train_val_dataloader with the resumable stream: start the resumed epoch mid-way."""
    def create_train_val_dataloader(opt, logger):
        _STREAM['seed'] = opt.get('manual_seed') or 0
        result = original(opt, logger)
        train_loader, sampler, val_loaders = result[0], result[1], result[2]
        for i, loader in enumerate([train_loader, *val_loaders]):
            if loader is not None:  # starting an epoch's iterator must not draw from the global torch RNG
                loader.generator = torch.Generator().manual_seed(int(_STREAM['seed']) + i)
        state = _STREAM.pop('resume', None)
        if state is not None and train_loader is not None:
            per_epoch = len(train_loader)
            done = int(state['iter']) - int(state['epoch']) * per_epoch
            if 0 <= done <= per_epoch:
                sampler.skip_in_epoch(int(state['epoch']), done * train_loader.batch_size)
                logger.info(f"Resuming the data stream at batch {done} of epoch {state['epoch']}.")
            else:
                logger.warning(f"Resume: iteration {state['iter']} is not in epoch {state['epoch']} with "
                               f'{per_epoch} iterations per epoch (dataset or batch size changed?): the epoch '
                               'restarts from its first batch, the run will not repeat an uninterrupted one.')
        return result
    return create_train_val_dataloader


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
        resolve_dataroots(opt, root_path)  # validated already, on the file as read (_precheck)
        expose_base_options(opt)  # FKEAttach: model classes read base-arch keys (SwinIRModel's window_size)
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


def _precheck(argv: Sequence[str], is_train: bool, root: str) -> None:
    """Read and validate the options file before BasicSR parses it or creates anything (exit 2 on a mistake)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('-opt')
    parser.add_argument('--launcher', default='none')
    args, _ = parser.parse_known_args(argv)
    if args.opt is None:
        raise OptionsError('Missing -opt: pass the options file, e.g. `python basicsr/train.py -opt '
                           'options/train/Demo/DeepRFTv2-Demo.yml`.')
    opt = load_yaml(args.opt)
    resolve_dataroots(opt, root)
    if args.launcher != 'none':  # what init_dist will find (torchrun / slurm set these before the start)
        opt.setdefault('world_size', int(os.environ.get('WORLD_SIZE', os.environ.get('SLURM_NTASKS', 1))))
    validate_options(opt, is_train=is_train, source=args.opt)
    if is_train and isinstance(opt.get('name'), str):
        remove_stale_tmp([osp.join(root, 'experiments', opt['name'], sub) for sub in ('models', 'training_states')])


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
        argv = prepare_argv(argv, pipeline, root)  # the authors'/ATD's files -> ours (docs/migrating.md)
        _precheck(argv, pipeline == 'train', root)
        bopt.init_dist = init_dist
        btr.load_resume_state = load_resume_state
        btr.create_train_val_dataloader = _stream_dataloaders(_ORIGINAL.setdefault(
            'create_train_val_dataloader', btr.create_train_val_dataloader))
        btr.build_dataset = _stream_build_dataset(_ORIGINAL.setdefault('build_dataset', btr.build_dataset))
        bt.build_dataset = _stream_build_dataset(_ORIGINAL.setdefault('test_build_dataset', bt.build_dataset))
        btr.EnlargedSampler = _stream_sampler
        base_model.BaseModel.model_to_device = model_to_device
        is_train = pipeline == 'train'
        checked = _checked_parse_options(bopt.parse_options, is_train)
        btr.parse_options = checked
        bt.parse_options = checked
        sys.argv = [f'basicsr/{pipeline}.py'] + argv
        (btr.train_pipeline if is_train else bt.test_pipeline)(root)
    except UserError as err:
        print(f'error: {_one_paragraph(err)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f'{pipeline}: interrupted (Ctrl-C); the last saved checkpoint and training state are intact '
              '(resume with --auto_resume).', file=sys.stderr)
        return 130
    return 0


def _one_paragraph(err: BaseException) -> str:
    """The message; for an error re-raised from a DataLoader worker, only its original last line."""
    text = str(err)
    if 'Original Traceback' in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        text = last.split(': ', 1)[1] if ': ' in last else last
    return text
