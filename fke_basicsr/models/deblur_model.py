"""DeblurModel: DeepRFTv2's multi-output supervision and progressive patch/batch schedule (paper §4.1)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, NamedTuple, Sequence

import torch
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import Tensor

from fke_basicsr.archs.outputs import levels as levels_of
from fke_basicsr.models.restoration_model import TRAIN_KEYS, RestorationModel
from fke_basicsr.ops.geometry import to_pair
from fke_basicsr.ops.pyramid import gaussian_pyramid
from fke_basicsr.registry import register

__all__ = ['DeblurModel', 'LEVEL_SUFFIXES', 'Stage', 'parse_progressive']

STAGE_KEYS = ('iters', 'gt_size', 'batch')


class Stage(NamedTuple):
    """One progressive-training stage: ``iters`` iterations of (h, w) crops, ``batch`` images (global)."""
    iters: int
    size: tuple[int, int]
    batch: int


def parse_progressive(stages: Any, total_iter: int, loader_gt_size: Any, multiple: int = 8,
                      world_size: int = 1, batch_per_gpu: int | None = None, accum_iter: int = 1) -> list[Stage]:
    """Validate a ``train.progressive`` list (Restormer/DeepRFTv2 schedule) and return its stages.

    Each stage is {iters, gt_size, batch}: ``batch`` is the effective global batch of that stage; each process
    trains on batch / world_size images of its loaded batch. Stage iters must sum to total_iter; crop sizes must
    be multiples of ``multiple`` and fit in the loader's gt_size.
    """
    if not isinstance(stages, Sequence) or isinstance(stages, str) or not stages:
        raise ValueError(f'train.progressive: expected a non-empty list of {{iters, gt_size, batch}}, got {stages!r}')
    loader = to_pair(loader_gt_size, 'datasets.train.gt_size', minimum=None) if loader_gt_size is not None else None
    out = []
    for j, st in enumerate(stages):
        key = f'train.progressive[{j}]'
        if not isinstance(st, Mapping):
            raise ValueError(f'{key}: expected a mapping with keys {STAGE_KEYS}, got {st!r}')
        for k in st:
            if k not in STAGE_KEYS:
                raise ValueError(f'{key}.{k}: unknown option; stage keys are {", ".join(STAGE_KEYS)}')
        for k in STAGE_KEYS:
            if k not in st:
                raise ValueError(f'{key}.{k}: missing')
        iters, batch = st['iters'], st['batch']
        if not isinstance(iters, int) or iters <= 0:
            raise ValueError(f'{key}.iters: expected a positive int, got {iters!r}')
        if not isinstance(batch, int) or batch <= 0:
            raise ValueError(f'{key}.batch: expected a positive int (the global batch), got {batch!r}')
        size = to_pair(st['gt_size'], f'{key}.gt_size', minimum=None)
        if any(s <= 0 or s % multiple for s in size):
            raise ValueError(f'{key}.gt_size: {st["gt_size"]} must be positive and divisible by {multiple} '
                             '(the arch\'s size_multiple)')
        if loader is not None and (size[0] > loader[0] or size[1] > loader[1]):
            raise ValueError(f'{key}.gt_size: {st["gt_size"]} exceeds datasets.train.gt_size {loader_gt_size}; '
                             'a stage can only crop inside the loaded patches')
        if batch % world_size:
            raise ValueError(f'{key}.batch: global batch {batch} is not divisible by the world size {world_size}')
        per_proc = batch // world_size
        if batch_per_gpu is not None and per_proc > batch_per_gpu:
            raise ValueError(f'{key}.batch: {batch} / {world_size} process(es) = {per_proc} exceeds '
                             f'datasets.train.batch_size_per_gpu ({batch_per_gpu}); raise batch_size_per_gpu to '
                             f'{per_proc}')
        if per_proc % accum_iter:
            raise ValueError(f'{key}.batch: per-process batch {per_proc} is not divisible by train.accum_iter '
                             f'({accum_iter})')
        out.append(Stage(iters, size, batch))
    total = sum(s.iters for s in out)
    if total != int(total_iter):
        raise ValueError(f'train.progressive: stage iters sum to {total}, but train.total_iter is {total_iter}; '
                         'make them equal')
    return out


# Loss-name suffix per pyramid level of the outputs: full, half (DeepRFTv2), quarter (MIMO-UNet, Fig. 3 c).
LEVEL_SUFFIXES = ('', '_half', '_quarter')


def _mean_loss(criterion, preds: list[Tensor], target: Tensor) -> Tensor:
    """Mean over the outputs of ``criterion(pred, target)`` (the authors' list convention)."""
    return torch.stack([criterion(p, target) for p in preds]).mean()


@register(MODEL_REGISTRY)
class DeblurModel(RestorationModel):
    """DeepRFTv2 training (paper §4.1): L1 + 0.01·FreqLoss on all full-res outputs and on all half-res outputs
    against the Gaussian-pyramid GT, gradient clipping at 0.01, optional progressive patch/batch stages."""

    train_keys = TRAIN_KEYS | {'progressive'}
    default_grad_clip = True
    default_grad_clip_norm = 0.01

    @classmethod
    def check_options(cls, opt: Mapping) -> None:
        super().check_options(opt)
        train = opt.get('train') or {}
        if opt.get('is_train') and train.get('progressive') is not None:
            loader = (opt.get('datasets') or {}).get('train') or {}
            # the arch class's multiple; the built network's own (it may be smaller) is checked again at init
            from basicsr.utils.registry import ARCH_REGISTRY
            arch = (opt.get('network_g') or {}).get('type')
            multiple = int(getattr(ARCH_REGISTRY.get(arch), 'size_multiple', 1) if arch in ARCH_REGISTRY else 1)
            parse_progressive(train['progressive'], int(train['total_iter']), loader.get('gt_size'), multiple,
                              int(opt.get('world_size', 1) or 1), loader.get('batch_size_per_gpu'),
                              int(train.get('accum_iter', 1)))

    def init_training_settings(self) -> None:
        super().init_training_settings()
        train = self.opt['train']
        self.stages = None
        self._stage_idx = None
        if train.get('progressive') is not None:
            loader = self.opt['datasets']['train']
            multiple = int(getattr(self.get_bare_model(self.net_g), 'size_multiple', 8))
            self.world_size = int(self.opt.get('world_size', 1) or 1)
            self.stages = parse_progressive(train['progressive'], int(train['total_iter']), loader.get('gt_size'),
                                            multiple, self.world_size, loader.get('batch_size_per_gpu'),
                                            self.accum_iter)
            logger = get_root_logger()
            start = 1
            for j, st in enumerate(self.stages):
                logger.info(f'Progressive stage {j}: iters {start}-{start + st.iters - 1}, gt_size {st.size[0]}x'
                            f'{st.size[1]}, effective global batch {st.batch} ({st.batch // self.world_size} per '
                            'process)')
                start += st.iters

    def stage_at(self, current_iter: int) -> int:
        """Index of the progressive stage that iteration ``current_iter`` (1-based) belongs to."""
        end = 0
        for j, st in enumerate(self.stages):
            end += st.iters
            if current_iter <= end:
                return j
        return len(self.stages) - 1

    def _generator(self, current_iter: int) -> torch.Generator:
        # A function of (seed, rank, iter) only: a resumed run draws the same crops as an uninterrupted one.
        seed = int(self.opt.get('manual_seed') or 0)
        rank = int(self.opt.get('rank', 0) or 0)
        return torch.Generator().manual_seed((seed * 1_000_003 + rank * 7_919 + current_iter) % (2 ** 63))

    def training_batch(self, current_iter: int) -> tuple[Tensor, Tensor]:
        """Sub-sample and randomly crop the loaded batch to the stage's (batch, gt_size) (Restormer's scheme)."""
        if not self.stages:
            return self.lq, self.gt
        j = self.stage_at(current_iter)
        st = self.stages[j]
        if j != self._stage_idx:
            get_root_logger().info(f'Iter {current_iter}: progressive stage {j}, gt_size {st.size[0]}x{st.size[1]}, '
                                   f'global batch {st.batch}.')
            self._stage_idx = j
        lq, gt = self.lq, self.gt
        scale = gt.shape[-1] // lq.shape[-1]
        g = self._generator(current_iter)
        n = st.batch // self.world_size
        if n < gt.shape[0]:
            idx = torch.randperm(gt.shape[0], generator=g)[:n].sort().values.to(gt.device)
            lq, gt = lq.index_select(0, idx), gt.index_select(0, idx)
        h, w = gt.shape[-2:]
        ch, cw = st.size
        if ch > h or cw > w:
            raise ValueError(f'train.progressive[{j}].gt_size: {ch}x{cw} is larger than the loaded {h}x{w} patches')
        # One crop position for the whole mini-batch, on the LQ grid so LQ and GT stay aligned for SR too.
        y0 = int(torch.randint(0, (h - ch) // scale + 1, (1,), generator=g)) * scale
        x0 = int(torch.randint(0, (w - cw) // scale + 1, (1,), generator=g)) * scale
        gt = gt[..., y0:y0 + ch, x0:x0 + cw]
        lq = lq[..., y0 // scale:(y0 + ch) // scale, x0 // scale:(x0 + cw) // scale]
        return lq, gt

    def compute_losses(self, output: Any, gt: Tensor) -> tuple[Tensor, OrderedDict]:
        """L1 + FreqLoss over the full-res outputs vs GT, and the same over every coarser level's outputs (half-res;
        MIMO-UNet's quarter-res too) vs the matching Gaussian-pyramid level of the GT."""
        levels = [[o.float() for o in outs] for outs in levels_of(output)]
        full = levels[0]
        gts = gaussian_pyramid(gt, len(levels))  # one level: [gt]
        terms = OrderedDict()
        for outs, target, suffix in zip(levels, gts, LEVEL_SUFFIXES):
            if not outs:
                continue
            if self.cri_pix:
                terms[f'l_pix{suffix}'] = _mean_loss(self.cri_pix, outs, target)
            if self.cri_fft:
                terms[f'l_fft{suffix}'] = _mean_loss(self.cri_fft, outs, target)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(full[-1], gt)
            if l_percep is not None:
                terms['l_percep'] = l_percep
            if l_style is not None:
                terms['l_style'] = l_style
        return sum(terms.values()), terms
