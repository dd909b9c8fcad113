"""RestorationModel: BasicSR's SRModel with the training recipe of DeepRFTv2 (paper §4.1).

What it adds to SRModel, each switchable from ``train:`` in the YAML file:
AdamW (and SGD) besides BasicSR's Adam; torch's ``CosineAnnealingLR`` (the authors' TrueCosineAnnealingLR) and
Restormer's ``CosineAnnealingRestartCyclicLR`` besides BasicSR's schedulers; an optional frequency loss
(``fft_loss_opt``); gradient-norm clipping; AMP (``amp: bf16|fp16|off``; FFTs and scans stay fp32 inside the
ops, fp16 uses a GradScaler); gradient accumulation (``accum_iter``: each loaded batch runs as that many
micro-batches, so one iteration is still one optimiser step and the effective batch is unchanged);
validation through the ``val:`` test-time protocol (fke_basicsr.protocol: pad, whole or tiled); atomic
checkpoints.
Options are checked when the model is built and a mistake raises ValueError naming the key.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections import OrderedDict
from typing import Any, Iterable, Mapping, Sequence

import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models import lr_scheduler as basicsr_schedulers
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from fke_basicsr.archs.outputs import prediction
from fke_basicsr.protocol import TILE_KEYS, TestTimeProtocol, check_network_options
from fke_basicsr.registry import register

__all__ = ['RestorationModel', 'CosineAnnealingRestartCyclicLR', 'AMP_DTYPES']

AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR', 'CosineAnnealingLR',
              'TrueCosineAnnealingLR', 'CosineAnnealingRestartCyclicLR')
# Keys of the `train:` section this model reads; anything else is almost surely a typo that would be ignored.
TRAIN_KEYS = frozenset({
    'total_iter', 'warmup_iter', 'optim_g', 'scheduler', 'ema_decay', 'pixel_opt', 'perceptual_opt',
    'fft_loss_opt', 'use_grad_clip', 'grad_clip_norm', 'amp', 'accum_iter'})
VAL_KEYS = frozenset({'val_freq', 'save_img', 'suffix', 'metrics', 'pbar', 'tile', 'amp', 'pad_mode', 'pad_to',
                      'size_multiple'})


class CosineAnnealingRestartCyclicLR(LRScheduler):
    """Restormer's cyclic cosine: period i anneals from restart_weights[i]·base_lr to eta_mins[i].

    Past the last period the rate stays at the last eta_min (Restormer's version raises there).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, periods: Sequence[int],
                 restart_weights: Sequence[float] = (1.0,), eta_mins: Sequence[float] = (0.0,),
                 last_epoch: int = -1) -> None:
        if not periods or any(int(p) <= 0 for p in periods):
            raise ValueError(f'train.scheduler.periods must be a non-empty list of positive ints, got {periods!r}')
        if len(restart_weights) != len(periods) or len(eta_mins) != len(periods):
            raise ValueError('train.scheduler: periods, restart_weights and eta_mins must have the same length, got '
                             f'{len(periods)}, {len(restart_weights)}, {len(eta_mins)}')
        self.periods = [int(p) for p in periods]
        self.restart_weights = [float(w) for w in restart_weights]
        self.eta_mins = [float(e) for e in eta_mins]
        self.cumulative_period = [sum(self.periods[:i + 1]) for i in range(len(self.periods))]
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        t = self.last_epoch
        idx = next((i for i, c in enumerate(self.cumulative_period) if t <= c), None)
        if idx is None:
            return [self.eta_mins[-1] for _ in self.base_lrs]
        start = 0 if idx == 0 else self.cumulative_period[idx - 1]
        weight, eta_min, period = self.restart_weights[idx], self.eta_mins[idx], self.periods[idx]
        cos = 0.5 * (1 + math.cos(math.pi * (t - start) / period))
        return [eta_min + weight * (base_lr - eta_min) * cos for base_lr in self.base_lrs]


def _as_dtype(value: Any, key: str) -> torch.dtype | None:
    if value is None or value is False:
        return None
    if value is True:
        raise ValueError(f"{key}: give the precision explicitly, one of {sorted(AMP_DTYPES)}, not true")
    if value not in AMP_DTYPES:
        raise ValueError(f"{key}: expected one of {sorted(AMP_DTYPES)}, got {value!r}")
    return AMP_DTYPES[value]


def _check_known(section: str, keys: Iterable[str], known: Iterable[str]) -> None:
    for key in keys:
        if key not in known:
            raise ValueError(f"{section}.{key}: unknown option; known keys are {', '.join(sorted(known))}")


def _atomic_torch_save(obj: Any, path: str, retries: int = 3) -> None:
    """Atomic torch.save (a kill mid-write never leaves a truncated checkpoint), retried like BasicSR's save."""
    from fke_basicsr.checkpoints import save_state_dict_atomic
    for attempt in range(retries):
        try:
            save_state_dict_atomic(obj, path)
            return
        except OSError as err:  # e.g. a network file system hiccup; BasicSR retries the same way
            get_root_logger().warning(f'Saving {path} failed ({err}); {retries - attempt - 1} retries left.')
            time.sleep(1)
    raise OSError(f'Could not save {path} after {retries} attempts.')


@register(MODEL_REGISTRY)
class RestorationModel(SRModel):
    """Single-output restoration/SR model: SRModel + AdamW, cosine schedules, clipping, EMA, AMP, accumulation."""

    train_keys: frozenset = TRAIN_KEYS
    default_grad_clip: bool = False
    default_grad_clip_norm: float = 0.01

    def __init__(self, opt: dict) -> None:
        self.check_options(opt)  # before the network is built: a typo must not cost a model build
        # DDP must tolerate parameters that get no gradient: DeepRFTv2's first-column skip scales multiply the
        # (absent) previous column, kept for checkpoint compatibility. An explicit `false` in the YAML wins.
        opt.setdefault('find_unused_parameters', True)
        super().__init__(opt)

    # ----------------------------------------------------------------------------------------- options
    @classmethod
    def check_options(cls, opt: Mapping) -> None:
        """Validate the model-specific options (train/val sections); raise ValueError naming the key."""
        val = opt.get('val') or {}
        _check_known('val', val.keys(), VAL_KEYS)
        _as_dtype(val.get('amp', 'off'), 'val.amp')
        tile = val.get('tile')
        if tile is not None:
            if not isinstance(tile, Mapping) or 'size' not in tile:
                raise ValueError(f"val.tile: expected a mapping {{size: int, overlap: int, batch: int}}, got {tile!r}")
            _check_known('val.tile', tile.keys(), TILE_KEYS)
        check_network_options(opt.get('network_g'))
        try:  # the protocol's own checks (tile vs size_multiple, overlap, batch, pad_mode) before any folder is made
            TestTimeProtocol.from_options(val, None, scale=1)
        except ValueError as err:
            raise ValueError(f'val: {err}') from None
        if not opt.get('is_train', False):
            return
        train = opt.get('train')
        if not isinstance(train, Mapping):
            raise ValueError('train: a training options file needs a `train:` section')
        _check_known('train', train.keys(), cls.train_keys)
        for key in ('total_iter', 'optim_g', 'scheduler'):
            if key not in train:
                raise ValueError(f'train.{key}: missing (required)')
        if int(train['total_iter']) <= 0:
            raise ValueError(f"train.total_iter: expected a positive int, got {train['total_iter']!r}")
        optim = train['optim_g']
        if not isinstance(optim, Mapping) or optim.get('type') not in OPTIMIZERS:
            raise ValueError(f"train.optim_g.type: expected one of {sorted(OPTIMIZERS)}, got "
                             f"{optim.get('type') if isinstance(optim, Mapping) else optim!r}")
        sched = train['scheduler']
        if not isinstance(sched, Mapping) or sched.get('type') not in SCHEDULERS:
            raise ValueError(f"train.scheduler.type: expected one of {list(SCHEDULERS)}, got "
                             f"{sched.get('type') if isinstance(sched, Mapping) else sched!r}")
        _as_dtype(train.get('amp', 'off'), 'train.amp')
        accum = train.get('accum_iter', 1)
        if not isinstance(accum, int) or accum < 1:
            raise ValueError(f'train.accum_iter: expected an int >= 1, got {accum!r}')
        batch = (opt.get('datasets') or {}).get('train', {}).get('batch_size_per_gpu')
        if batch is not None and batch % accum:
            raise ValueError(f'train.accum_iter: {accum} must divide datasets.train.batch_size_per_gpu ({batch}); '
                             'each loaded batch is split into accum_iter micro-batches')
        if float(train.get('grad_clip_norm', 1.0)) <= 0:
            raise ValueError(f"train.grad_clip_norm: expected a positive float, got {train['grad_clip_norm']!r}")
        if not any(train.get(k) for k in ('pixel_opt', 'perceptual_opt', 'fft_loss_opt')):
            raise ValueError('train.pixel_opt: no loss configured (give pixel_opt, fft_loss_opt or perceptual_opt)')

    # ----------------------------------------------------------------------------------------- setup
    def init_training_settings(self) -> None:
        self.net_g.train()
        train_opt = self.opt['train']
        logger = get_root_logger()
        self.ema_decay = float(train_opt.get('ema_decay', 0) or 0)
        if self.ema_decay > 0:
            logger.info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g')
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()
            for p in self.net_g_ema.parameters():
                p.requires_grad_(False)

        def loss(key: str):
            return build_loss(dict(train_opt[key])).to(self.device) if train_opt.get(key) else None

        self.cri_pix, self.cri_fft, self.cri_perceptual = loss('pixel_opt'), loss('fft_loss_opt'), loss('perceptual_opt')
        self.amp_dtype = _as_dtype(train_opt.get('amp', 'off'), 'train.amp')
        if self.amp_dtype is not None and not torch.amp.is_autocast_available(self.device.type):
            raise ValueError(f'train.amp: autocast is not available on {self.device.type}')
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.accum_iter = int(train_opt.get('accum_iter', 1))
        self.use_grad_clip = bool(train_opt.get('use_grad_clip', self.default_grad_clip))
        self.grad_clip_norm = float(train_opt.get('grad_clip_norm', self.default_grad_clip_norm))
        self.setup_optimizers()
        self.setup_schedulers()
        world = self.opt.get('world_size', 1)
        batch = self.opt['datasets']['train'].get('batch_size_per_gpu')
        if batch is not None:
            logger.info(f'Effective global batch: {batch * world} (batch_size_per_gpu {batch} x world size {world}), '
                        f'{self.accum_iter} micro-batch(es) per step; AMP: {train_opt.get("amp", "off")}; '
                        f'grad clip: {self.grad_clip_norm if self.use_grad_clip else "off"}.')

    def setup_optimizers(self) -> None:
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        optim_opt = dict(self.opt['train']['optim_g'])  # a copy: BasicSR pops `type` from the options in place
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        if optim_type not in OPTIMIZERS:
            raise ValueError(f'train.optim_g.type: expected one of {sorted(OPTIMIZERS)}, got {optim_type!r}')
        if 'betas' in kwargs:
            kwargs['betas'] = tuple(kwargs['betas'])
        try:
            return OPTIMIZERS[optim_type](params, lr=float(lr), **kwargs)
        except TypeError as err:
            raise ValueError(f'train.optim_g: {err}') from None

    def setup_schedulers(self) -> None:
        sched_opt = dict(self.opt['train']['scheduler'])
        sched_type = sched_opt.pop('type')
        for optimizer in self.optimizers:
            try:
                self.schedulers.append(self._build_scheduler(sched_type, optimizer, sched_opt))
            except TypeError as err:
                raise ValueError(f'train.scheduler: {err}') from None

    def _build_scheduler(self, sched_type: str, optimizer, kw: dict) -> LRScheduler:
        if sched_type in ('MultiStepLR', 'MultiStepRestartLR'):
            return basicsr_schedulers.MultiStepRestartLR(optimizer, **kw)
        if sched_type == 'CosineAnnealingRestartLR':
            return basicsr_schedulers.CosineAnnealingRestartLR(optimizer, **kw)
        if sched_type in ('CosineAnnealingLR', 'TrueCosineAnnealingLR'):
            kw = dict(kw)
            t_max = int(kw.pop('T_max', self.opt['train']['total_iter']))
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max,
                                                              eta_min=float(kw.pop('eta_min', 0.0)), **kw)
        if sched_type == 'CosineAnnealingRestartCyclicLR':
            return CosineAnnealingRestartCyclicLR(optimizer, **kw)
        raise ValueError(f'train.scheduler.type: expected one of {list(SCHEDULERS)}, got {sched_type!r}')

    # ----------------------------------------------------------------------------------------- training
    def autocast(self, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
        """Autocast context for ``dtype`` on the model's device (a no-op for None)."""
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def training_batch(self, current_iter: int) -> tuple[Tensor, Tensor]:
        """The (lq, gt) pair trained on at ``current_iter``; DeblurModel crops it for progressive training."""
        return self.lq, self.gt

    def compute_losses(self, output: Any, gt: Tensor) -> tuple[Tensor, OrderedDict]:
        """Total loss and its named terms for one (micro-)batch; outputs are cast to fp32 first."""
        pred = prediction(output).float()
        terms = OrderedDict()
        if self.cri_pix:
            terms['l_pix'] = self.cri_pix(pred, gt)
        if self.cri_fft:
            terms['l_fft'] = self.cri_fft(pred, gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(pred, gt)
            if l_percep is not None:
                terms['l_percep'] = l_percep
            if l_style is not None:
                terms['l_style'] = l_style
        return sum(terms.values()), terms

    def optimize_parameters(self, current_iter: int) -> None:
        self.optimizer_g.zero_grad(set_to_none=True)
        lq, gt = self.training_batch(current_iter)
        n = self.accum_iter
        if lq.shape[0] % n:
            raise ValueError(f'train.accum_iter: {n} does not divide the batch of {lq.shape[0]} at iter {current_iter}')
        log = OrderedDict()
        for i, (lq_c, gt_c) in enumerate(zip(lq.chunk(n), gt.chunk(n))):
            # DDP: all-reduce the gradients once, on the last micro-batch only.
            sync = i == n - 1 or not isinstance(self.net_g, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self.net_g.no_sync():
                with self.autocast(self.amp_dtype):
                    output = self.net_g(lq_c)
                l_total, terms = self.compute_losses(output, gt_c)
                self.scaler.scale(l_total / n).backward()
            for k, v in terms.items():
                log[k] = log.get(k, 0) + v.detach() / n
            del output
        if self.use_grad_clip:
            self.scaler.unscale_(self.optimizer_g)
            log['grad_norm'] = torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), self.grad_clip_norm).detach()
        self.scaler.step(self.optimizer_g)
        self.scaler.update()
        self.log_dict = self.reduce_loss_dict(log)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    # ----------------------------------------------------------------------------------------- inference
    def protocol(self, net: torch.nn.Module) -> TestTimeProtocol:
        """The test-time protocol of the ``val:`` section (zero padding by default: the authors' validation)."""
        val_opt = dict(self.opt.get('val') or {})
        if val_opt.get('tile') is None and self.opt.get('tile'):
            val_opt['tile'] = self.opt['tile']
        return TestTimeProtocol.from_options(val_opt, net, scale=int(self.opt.get('scale', 1)), pad_mode='constant')

    def infer(self, net: torch.nn.Module, lq: Tensor) -> Tensor:
        """Full-image prediction through the val protocol: pad, whole or tiled, crop back (fke_basicsr.protocol)."""
        protocol = self.protocol(net)
        with self.autocast(_as_dtype((self.opt.get('val') or {}).get('amp', 'off'), 'val.amp')):
            return protocol(net, lq).float()

    def test(self) -> None:
        ema = hasattr(self, 'net_g_ema')
        # The bare module: a DDP forward on rank 0 alone could wait on a collective (buffer broadcast).
        net = self.net_g_ema if ema else self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self.infer(net, self.lq)
        net.train(was_training and not ema)

    # ----------------------------------------------------------------------------------------- checkpoints
    @master_only
    def save_network(self, net, net_label: str, current_iter, param_key='params') -> None:
        """BasicSR's save_network, written atomically; keys without `module.`, tensors on the CPU."""
        label = 'latest' if current_iter == -1 else current_iter
        path = os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(keys):
            raise ValueError(f'param_key: {len(keys)} keys for {len(nets)} networks')
        save = {}
        for net_, key in zip(nets, keys):
            state = self.get_bare_model(net_).state_dict()
            save[key] = OrderedDict((k[7:] if k.startswith('module.') else k, v.detach().cpu())
                                    for k, v in state.items())
        _atomic_torch_save(save, path)

    def load_network(self, net, load_path: str, strict: bool = True, param_key: str | None = 'params') -> None:
        """BasicSR's load_network through the one loader: weights-only, authors' layout, the mismatch report."""
        from fke_basicsr.checkpoints import CheckpointMismatchError, load_checkpoint, safe_load
        obj = safe_load(load_path, what='path.pretrain_network_g')
        if param_key is not None and isinstance(obj, Mapping) and param_key not in obj and 'params' in obj:
            get_root_logger().info(f'Loading: {param_key} does not exist in {load_path}, use params.')
            param_key = 'params'
        if param_key is not None and isinstance(obj, Mapping) and param_key not in obj:
            raise CheckpointMismatchError(f"{load_path}: no '{param_key}' entry (it has {sorted(obj)[:6]}); set "
                                          'path.param_key_g to one of those, or point path.pretrain_network_g to a '
                                          'BasicSR checkpoint.')
        bare = self.get_bare_model(net)
        get_root_logger().info(f'Loading {bare.__class__.__name__} model from {load_path}, with param key: '
                               f'[{param_key}].')
        try:
            load_checkpoint(bare, obj, strict=strict, param_key=param_key)
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(f'{load_path}: {err}') from None

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Optimisers, schedulers, the fp16 GradScaler and the RNG states, written atomically.

        Only tensors, numbers, strings and containers go in, so the file loads with ``weights_only=True``. The
        data stream's position is (epoch, iter) (see fke_basicsr.data.stream).
        """
        from fke_basicsr.rng import get_rng_states
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers],
                 'rng': get_rng_states()}
        if getattr(self, 'scaler', None) is not None and self.scaler.is_enabled():
            state['scaler'] = self.scaler.state_dict()
        _atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def resume_training(self, resume_state: dict) -> None:
        """Reload optimisers/schedulers, the GradScaler and the RNG states (the last thing before the loop)."""
        from fke_basicsr.rng import set_rng_states
        if len(resume_state['optimizers']) != len(self.optimizers) or \
                len(resume_state['schedulers']) != len(self.schedulers):
            raise ValueError(f"path.resume_state: the state holds {len(resume_state['optimizers'])} optimiser(s) "
                             f"and {len(resume_state['schedulers'])} scheduler(s), this model has "
                             f'{len(self.optimizers)} and {len(self.schedulers)}: resume with the options it was '
                             'trained with.')
        super().resume_training(resume_state)
        if 'scaler' in resume_state and self.scaler.is_enabled():
            self.scaler.load_state_dict(resume_state['scaler'])
        if 'rng' in resume_state:
            set_rng_states(resume_state['rng'])
        else:
            get_root_logger().warning('The training state has no RNG states (written by an older version): the '
                                      'resumed run will not repeat the uninterrupted one exactly.')
