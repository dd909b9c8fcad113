"""Honest model profile: parameters, MACs in two conventions, FFT and selective-scan op counts, training
memory with reversible columns on/off, inference latency (docs/architecture.md; docs/performance.md).

Usage::

    python -m fke_basicsr.profile --arch DeepRFTv2 --variant B --size 256 256 [--memory] [--latency]
    python -m fke_basicsr.profile --opt options/test/SR/test_ATD_light_FKE_SRx4.yml --size 64 64 --json p.json

Counting conventions (all per image, batch 1, one eval-mode forward; "MACs" = multiply-accumulates):

* **conv+linear MACs** (``macs_conv_linear``): every ``nn.ConvNd`` / ``nn.ConvTransposeNd`` / ``nn.Linear``
  (subclasses included): ``k_h·k_w·(C_in/groups)·C_out`` per output position (per input position for transposed
  convs) and ``in·out`` per row of a Linear. No bias adds, no element-wise work. This is the 118.81 G (-B) /
  74.35 G (-S) figure at 256² (docs/architecture.md, Parameters and MACs).
* **ptflops-module MACs** (``macs_ptflops``): what ptflops 0.7.5's default PyTorch backend reports, re-implemented
  here (ptflops is not a dependency): forward hooks on modules whose *exact* type is one of ptflops' list —
  ConvNd/ConvTransposeNd (kernel MACs + one add per output element if biased), Linear (``(in·out + out)`` per row
  with bias), ReLU/PReLU/ELU/LeakyReLU/ReLU6/GELU (output numel), pooling (input numel), Batch/Instance/Group/
  LayerNorm (input numel, ×2 when the module has an ``affine`` attribute set — nn.LayerNorm has none), Upsample
  (output numel), RNN and MultiheadAttention formulas — plus ptflops' patched functionals, counted wherever they
  are called (also inside hooked modules, as ptflops does: an ``nn.GELU`` counts twice): F.relu/prelu/elu/relu6/
  gelu/silu/softmax and the F.*pool* family (input numel), F.interpolate/upsample (output numel), torch.matmul/mm/
  bmm (``numel(a)·b.shape[-1]``), addmm/baddbmm (+ numel of the added input), and the *function* forms torch.mul/
  add, Tensor.mul/add (broadcast numel; the ``*`` and ``+`` operators are not counted). Custom modules (our
  LayerNorm2d, SimpleGate, einsum, FFTs, the scan) count zero. This is the paper's "FLOPs" (Table 1's 120 G,
  Table 6): 120.30 G (-B) / 75.33 G (-S) at 256².
* **einsum MACs** (``macs_einsum``, in neither convention): product of the sizes of all indices of a two-operand
  ``torch.einsum`` (EVSS2D's x_proj / dt_proj: +4.12 G for -B at 256²).
* **FFT real ops** (``fft_ops``): every ``fke_basicsr.ops.fft.rfft2`` / ``irfft2`` call is counted as
  ``2.5·n·log2(n)`` real floating-point operations per 2-D transform of ``n = H·W`` real points (H×W the real
  signal: the input of rfft2, the output of irfft2), times the number of transformed maps (batch·channels).
  The spectral product ``Y ⊙ K`` of each FKE is listed as ``fke_spectral_product_ops``: 6 real ops (4 mul,
  2 add) per complex element of K (counted on the FKE's ``otf_head`` output).
* **selective-scan ops** (``scan_ops``): per call of ``fke_basicsr.ops.selective_scan.selective_scan`` with
  u of shape (b, d, L) and N states: ``b·d·L·(7N + 5)`` (+2 per element with a ``z`` gate). Per (b, d, t, n):
  Δ·A, exp, (Δu)·B, the state update a·h + x (2) and the read-out C·h accumulated (2) = 7; per (b, d, t): delta
  bias add, softplus, Δ·u, D·u and its add = 5 (softplus / exp / silu counted as one op each).

Memory (``--memory``): one training step (forward with grad, sum of L1 means of every output, backward) on one
``size`` patch, once with every reversible (``save_memory``) flag on and once with all off. CUDA: in-process
``torch.cuda.max_memory_allocated``. CPU: each run in a fresh subprocess, reporting its peak RSS
(``ru_maxrss``) and the peak minus the RSS just before the step. Latency (``--latency``): eval-mode forward under
``no_grad``, ``--warmup`` untimed runs then ``--reps`` timed ones (median, mean, min), device and threads printed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fke_basicsr.build import build_model, network_options, parse_sets  # noqa: F401  (re-exported)

__all__ = ['MacReport', 'OpReport', 'count_parameters', 'count_macs', 'count_all', 'count_fft_and_scan', 'count_ops',
           'fft_real_ops', 'scan_ops', 'measure_latency', 'measure_training_memory', 'set_reversible',
           'build_model', 'parse_sets', 'profile_model', 'main']

# ------------------------------------------------------------------------------------------------ model building


# ------------------------------------------------------------------------------------------------ parameters


def count_parameters(model: nn.Module) -> int:
    """Total parameter count, sum(p.numel()) over unique parameters."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ MAC counting

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVT = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_ACTS = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.GELU)
_POOLS = (nn.MaxPool1d, nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveMaxPool1d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool3d, nn.AdaptiveAvgPool3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
          nn.GroupNorm, nn.LayerNorm)
_RNNS = (nn.RNN, nn.GRU, nn.LSTM)
_RNN_CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
# functionals ptflops 0.7.5 patches (counted as input numel, except interpolate/upsample)
_NUMEL_FUNCTIONALS = ('relu', 'prelu', 'elu', 'relu6', 'gelu', 'silu', 'softmax', 'avg_pool1d', 'avg_pool2d',
                      'avg_pool3d', 'max_pool1d', 'max_pool2d', 'max_pool3d', 'adaptive_avg_pool1d',
                      'adaptive_avg_pool2d', 'adaptive_avg_pool3d', 'adaptive_max_pool1d', 'adaptive_max_pool2d',
                      'adaptive_max_pool3d')


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(list(shape), dtype=np.int64)) if len(shape) else 1


def _conv_kernel_macs(m: nn.Module, inp: Tensor, out: Tensor) -> int:
    """Kernel MACs of a (transposed) conv: per output (input, if transposed) position k·C_in/g·C_out."""
    per_pos = _prod(m.kernel_size) * m.in_channels * (m.out_channels // m.groups)
    positions = inp.shape[0] * _prod((inp if isinstance(m, _CONVT) else out).shape[2:])
    return per_pos * positions


def _rnn_step(m: nn.Module, w_ih: Tensor, w_hh: Tensor) -> int:
    """ptflops' per-step RNN/GRU/LSTM cost (weights + gate element-wise work)."""
    flops = w_ih.shape[0] * w_ih.shape[1] + w_hh.shape[0] * w_hh.shape[1]
    hs = m.hidden_size
    if isinstance(m, (nn.RNN, nn.RNNCell)):
        flops += hs
    elif isinstance(m, (nn.GRU, nn.GRUCell)):
        flops += hs + 3 * hs + 3 * hs
    else:
        flops += 4 * hs + 3 * hs + 3 * hs
    return flops


def _mha_macs(m: nn.MultiheadAttention, q: Tensor, k: Tensor, v: Tensor) -> int:
    """ptflops' MultiheadAttention formula (projections, QK^T, softmax, AV, output projection)."""
    bf = getattr(m, 'batch_first', False)
    b, li = (q.shape[0], 1) if bf else (q.shape[1], 0)
    qd, kd, vd = q.shape[2], k.shape[2], v.shape[2]
    ql, kl, vl = q.shape[li], k.shape[li], v.shape[li]
    flops = ql * qd + ql * qd * qd + kl * kd * kd + vl * vd * vd
    if m.in_proj_bias is not None:
        flops += (ql + kl + vl) * qd
    flops += m.num_heads * (ql * kl * (qd // m.num_heads) + ql * kl + ql * kl * (vd // m.num_heads))
    flops += ql * vd * (vd + 1)
    return flops * b


def _ptflops_module_macs(m: nn.Module, inputs: tuple, out: Any) -> int | None:
    """MACs ptflops' default backend books for module ``m`` (None: a type ptflops does not hook)."""
    t = type(m)
    inp = inputs[0] if inputs else None
    if t in _CONV or t in _CONVT:
        bias = inp.shape[0] * _prod(out.shape[1:]) if m.bias is not None else 0
        return _conv_kernel_macs(m, inp, out) + bias
    if t is nn.Linear:
        rows = _prod(inp.shape[:-1])
        return (inp.shape[-1] * out.shape[-1] + (out.shape[-1] if m.bias is not None else 0)) * rows
    if t in _ACTS:
        return out.numel()
    if t in _POOLS:
        return inp.numel()
    if t in _NORMS:
        return inp.numel() * (2 if getattr(m, 'affine', False) else 1)
    if t is nn.Upsample:
        return out[0].numel()  # ptflops books the numel of output[0] (the first sample), as here
    if t in _RNNS:
        flops = 0
        for i in range(m.num_layers):
            flops += _rnn_step(m, getattr(m, f'weight_ih_l{i}'), getattr(m, f'weight_hh_l{i}'))
            if m.bias:
                flops += getattr(m, f'bias_ih_l{i}').shape[0] + getattr(m, f'bias_hh_l{i}').shape[0]
        flops *= inp.shape[0] * inp.shape[1]
        return flops * (2 if m.bidirectional else 1)
    if t in _RNN_CELLS:
        flops = _rnn_step(m, m.weight_ih, m.weight_hh)
        if m.bias:
            flops += m.bias_ih.shape[0] + m.bias_hh.shape[0]
        return flops * inp.shape[0]
    if t is nn.MultiheadAttention:
        return _mha_macs(m, *inputs[:3])
    return None


def _broadcast_numel(a: Any, b: Any) -> int:
    """ptflops' element-wise op cost: numel of the broadcast shape (1 for two scalars)."""
    ta, tb = torch.is_tensor(a), torch.is_tensor(b)
    if not ta and not tb:
        return 1
    if not ta or not tb:
        return (a if ta else b).numel()
    n = max(a.dim(), b.dim())
    # ptflops pads the shorter shape on the right (not numpy's left); equal-rank operands, the usual case, agree
    sa, sb = list(a.shape) + [1] * (n - a.dim()), list(b.shape) + [1] * (n - b.dim())
    return _prod([max(x, y) for x, y in zip(sa, sb)])


def _interp_macs(*args: Any, **kwargs: Any) -> int:
    inp = kwargs.get('input', args[0] if args else None)
    size = kwargs.get('size', args[1] if len(args) > 1 else None)
    if size is not None:
        nd = inp.dim() - 2
        sz = list(size) if isinstance(size, (tuple, list)) else [int(size)] * nd
        return _prod(sz) * _prod(inp.shape[:2])
    scale = kwargs.get('scale_factor', args[2] if len(args) > 2 else None)
    if isinstance(scale, (tuple, list)) and len(scale) == inp.dim() - 2:
        return int(inp.numel() * _prod([int(s) for s in scale]))
    return int(inp.numel() * scale ** (inp.dim() - 2))


def _einsum_macs(equation: str, *operands: Any) -> int:
    """Product of the sizes of all distinct indices (two-operand contraction); 0 for other forms."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    if not isinstance(equation, str) or '...' in equation or len(operands) != 2:
        return 0
    lhs = equation.replace(' ', '').split('->')[0].split(',')
    sizes: dict[str, int] = {}
    for spec, op in zip(lhs, operands):
        for letter, n in zip(spec, op.shape):
            sizes[letter] = int(n)
    return _prod(list(sizes.values()))


@dataclass
class MacReport:
    """MAC counts of one forward (see the module docstring for the conventions)."""
    macs_conv_linear: int = 0
    macs_conv_linear_bias: int = 0   # bias adds of those layers (ptflops includes them)
    macs_ptflops: int = 0
    macs_einsum: int = 0
    by_type: dict[str, int] = field(default_factory=dict)       # ptflops convention, per module type / functional


class _MacCounter:
    """Context manager: module hooks + ptflops' functional patches, restored on exit."""

    def __init__(self, model: nn.Module, stub_scan: bool = True):
        self.model = model
        self.stub_scan = stub_scan
        self.report = MacReport()
        self._handles: list = []
        self._patched: list[tuple[Any, str, Any]] = []
        self._opaque = 0   # > 0 while inside an FFT or selective-scan call: opaque kernels in the authors' runs
        self._stack = contextlib.ExitStack()

    def _book(self, key: str, n: int) -> None:
        if self._opaque:
            return
        self.report.macs_ptflops += int(n)
        self.report.by_type[key] = self.report.by_type.get(key, 0) + int(n)

    def _hook(self, m: nn.Module, inputs: tuple, out: Any) -> None:
        if self._opaque:
            return
        if isinstance(m, _CONV + _CONVT):
            kernel = _conv_kernel_macs(m, inputs[0], out)
            self.report.macs_conv_linear += kernel
            if m.bias is not None:
                self.report.macs_conv_linear_bias += inputs[0].shape[0] * _prod(out.shape[1:])
        elif isinstance(m, nn.Linear):
            rows = _prod(inputs[0].shape[:-1])
            self.report.macs_conv_linear += m.in_features * m.out_features * rows
            if m.bias is not None:
                self.report.macs_conv_linear_bias += m.out_features * rows
        n = _ptflops_module_macs(m, inputs, out)
        if n is not None:
            self._book(type(m).__name__, n)

    def _patch(self, owner: Any, name: str, cost: Callable[..., int], label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._book(label, cost(*args, **kwargs))
            return original(*args, **kwargs)

        self._patched.append((owner, name, original))
        setattr(owner, name, wrapper)

    def _patch_einsum(self) -> None:
        original = torch.einsum

        def wrapper(equation: str, *operands: Any) -> Any:
            if not self._opaque:
                self.report.macs_einsum += _einsum_macs(equation, *operands)
            return original(equation, *operands)

        self._patched.append((torch, 'einsum', original))
        torch.einsum = wrapper

    def _opaque_call(self, fn: Callable, replacement: Callable | None = None) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._opaque += 1
            try:
                return (replacement or fn)(*args, **kwargs)
            finally:
                self._opaque -= 1

        return wrapper

    def __enter__(self) -> MacReport:
        from fke_basicsr.ops import fft as fft_mod
        from fke_basicsr.ops import selective_scan as ss_mod

        for fn in (fft_mod.rfft2, fft_mod.irfft2):
            self._stack.enter_context(_swap_everywhere(fn, self._opaque_call(fn)))
        scan = ss_mod.selective_scan
        self._stack.enter_context(_swap_everywhere(scan, self._opaque_call(scan, _scan_stub if self.stub_scan
                                                                            else None)))
        for m in self.model.modules():
            self._handles.append(m.register_forward_hook(self._hook))
        numel = lambda x, *a, **k: x.numel()  # noqa: E731
        for name in _NUMEL_FUNCTIONALS:
            if hasattr(F, name):
                self._patch(F, name, numel, f'F.{name}')
        for name in ('interpolate', 'upsample'):
            self._patch(F, name, _interp_macs, f'F.{name}')
        matmul = lambda a, b, *x, **k: _prod(a.shape) * b.shape[-1]  # noqa: E731
        addmm = lambda i, m1, m2, *x, beta=1, **k: _prod(m1.shape) * m2.shape[-1] + (  # noqa: E731
            _prod(i.shape) if beta != 0 else 0)
        for owner, label in ((torch, 'torch'), (torch.Tensor, 'Tensor')):
            for name in ('matmul', 'mm', 'bmm'):
                self._patch(owner, name, matmul, f'{label}.{name}')
            self._patch(owner, 'addmm', addmm, f'{label}.addmm')
            for name in ('mul', 'add'):
                self._patch(owner, name, lambda a, b, *x, **k: _broadcast_numel(a, b), f'{label}.{name}')
        self._patch(torch, 'baddbmm', addmm, 'torch.baddbmm')
        self._patch_einsum()
        return self.report

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._stack.close()
        self._handles, self._patched = [], []


def _example_input(model: nn.Module, size: Sequence[int], device: torch.device | str = 'cpu') -> Tensor:
    """A (1, C, H, W) input with C from the first conv's in_channels (3 if there is none)."""
    channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3)
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, channels, int(size[0]), int(size[1]), generator=g).to(device)


def _scan_stub(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
               z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
               return_last_state: bool = False, backend: str | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Shape-exact stand-in for the selective scan (y = D·u, gated): counting needs shapes, not values."""
    y = u.float() * (D.float()[:, None] if D is not None else 0.0)
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(u.dtype)
    if return_last_state:
        return y, u.new_zeros(u.shape[0], u.shape[1], A.shape[-1], dtype=torch.float32)
    return y


def count_macs(model: nn.Module, x: Tensor, stub_scan: bool = True) -> MacReport:
    """Run one eval-mode forward of ``model`` on ``x`` (batch 1) under no_grad and count MACs (both conventions).

    Work inside fke_basicsr.ops' FFTs and selective scan is never booked (opaque kernels: cuFFT / mamba_ssm in
    the authors' runs). ``stub_scan`` replaces the scan by a shape-exact stand-in during counting, which changes
    no count (no layer depends on values) and saves most of the CPU time; pass False to run the real scan.
    """
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[0] != 1:
        raise ValueError(f'x must be one input with batch size 1, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    return _counted_forward(model, x, _MacCounter(model, stub_scan))


# ------------------------------------------------------------------------------------------------ FFT / scan counts


def fft_real_ops(n_points: int, transforms: int = 1) -> float:
    """2.5·n·log2(n) real ops per real 2-D FFT of n points, times the number of transforms."""
    return 2.5 * n_points * math.log2(n_points) * transforms if n_points > 1 else 0.0


def scan_ops(batch: int, channels: int, length: int, d_state: int, gated: bool = False) -> int:
    """Selective-scan op count b·d·L·(7N + 5) (+2·b·d·L with a z gate); formula in the module docstring."""
    return batch * channels * length * (7 * d_state + 5 + (2 if gated else 0))


@dataclass
class OpReport:
    """FFT / spectral-product / selective-scan operation counts of one forward."""
    fft_calls: int = 0
    fft_ops: float = 0.0
    fft_sizes: dict[str, int] = field(default_factory=dict)     # 'rfft2 HxW' -> number of 2-D transforms
    fke_spectral_product_ops: int = 0
    scan_calls: int = 0
    scan_ops: int = 0
    scan_shapes: dict[str, int] = field(default_factory=dict)   # 'b=…,d=…,L=…,N=…' -> calls


@contextlib.contextmanager
def _swap_everywhere(original: Callable, replacement: Callable) -> Iterator[None]:
    """Replace ``original`` by ``replacement`` in every loaded fke_basicsr module namespace (``from x import f``
    binds names per module), restoring all of them on exit."""
    swapped = []
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == 'fke_basicsr' or mod_name.startswith('fke_basicsr.')):
            continue
        for attr, value in list(vars(mod).items()):
            if value is original:
                setattr(mod, attr, replacement)
                swapped.append((mod, attr))
    try:
        yield
    finally:
        for mod, attr in swapped:
            setattr(mod, attr, original)


@contextlib.contextmanager
def count_ops(model: nn.Module | None = None, stub_scan: bool = False) -> Iterator[OpReport]:
    """Count fke_basicsr.ops.fft.rfft2/irfft2 and selective_scan calls (and FKE spectral products of ``model``)."""
    from fke_basicsr.ops import fft as fft_mod
    from fke_basicsr.ops import selective_scan as ss_mod

    report = OpReport()
    rfft2, irfft2, scan = fft_mod.rfft2, fft_mod.irfft2, ss_mod.selective_scan

    def book_fft(kind: str, real: Tensor) -> None:
        h, w = real.shape[-2:]
        maps = _prod(real.shape[:-2])
        report.fft_calls += 1
        report.fft_ops += fft_real_ops(h * w, maps)
        key = f'{kind} {h}x{w}'
        report.fft_sizes[key] = report.fft_sizes.get(key, 0) + maps

    def counted_rfft2(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        book_fft('rfft2', x)
        return rfft2(x, *args, **kwargs)

    def counted_irfft2(X: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        y = irfft2(X, *args, **kwargs)
        book_fft('irfft2', y)
        return y

    def counted_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, *args: Any, **kwargs: Any):
        b, d, length = u.shape
        n = A.shape[-1]
        gated = kwargs.get('z', args[1] if len(args) > 1 else None) is not None
        report.scan_calls += 1
        report.scan_ops += scan_ops(b, d, length, n, gated)
        key = f'b={b},d={d},L={length},N={n}'
        report.scan_shapes[key] = report.scan_shapes.get(key, 0) + 1
        return (_scan_stub if stub_scan else scan)(u, delta, A, B, C, *args, **kwargs)

    handles = []
    if model is not None:
        from fke_basicsr.archs.fke import FourierKernelEstimator

        def product_hook(m: nn.Module, inputs: tuple, out: Tensor) -> None:
            report.fke_spectral_product_ops += 6 * out.numel()

        handles = [m.otf_head.register_forward_hook(product_hook) for m in model.modules()
                   if isinstance(m, FourierKernelEstimator)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_swap_everywhere(rfft2, counted_rfft2))
        stack.enter_context(_swap_everywhere(irfft2, counted_irfft2))
        stack.enter_context(_swap_everywhere(scan, counted_scan))
        try:
            yield report
        finally:
            for h in handles:
                h.remove()


def count_all(model: nn.Module, x: Tensor, stub_scan: bool = True) -> tuple[MacReport, OpReport]:
    """:func:`count_macs` and :func:`count_fft_and_scan` from one forward."""
    if not isinstance(x, Tensor) or x.dim() < 3 or x.shape[0] != 1:
        raise ValueError(f'x must be one input with batch size 1, got '
                         f'{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}')
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _MacCounter(model, stub_scan) as macs, count_ops(model) as ops:
            model(x)
    finally:
        model.train(was_training)
    return macs, ops


def count_fft_and_scan(model: nn.Module, x: Tensor, stub_scan: bool = True) -> OpReport:
    """One eval-mode no_grad forward of ``model`` on ``x`` under :func:`count_ops` (``stub_scan``: see count_macs)."""
    return _counted_forward(model, x, count_ops(model, stub_scan))


def _counted_forward(model: nn.Module, x: Tensor, counter):
    """One eval-mode, no_grad forward inside the counting context ``counter``; returns what it yields."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter as report:
            model(x)
    finally:
        model.train(was_training)
    return report


# ------------------------------------------------------------------------------------------------ memory / latency


def set_reversible(model: nn.Module, on: bool) -> int:
    """Set every ``save_memory`` flag of ``model`` (encoders, decoders, FKE columns); returns how many were set."""
    n = 0
    if hasattr(model, 'set_save_memory'):
        model.set_save_memory(encoder=on, decoder=on, fke=on)
    for m in model.modules():
        if isinstance(getattr(m, 'save_memory', None), bool) or 'save_memory' in vars(m):
            try:
                m.save_memory = bool(on)
                n += 1
            except AttributeError:
                pass
    return n


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the peak)."""
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _training_step(model: nn.Module, x: Tensor) -> None:
    model.train()
    from fke_basicsr.archs.outputs import levels

    outs = [t for group in levels(model(x)) for t in group]
    loss = sum(o.float().abs().mean() for o in outs)
    loss.backward()


def _memory_in_process(model: nn.Module, size: Sequence[int], device: str) -> dict[str, Any]:
    x = _example_input(model, size, device)
    model.to(device)
    model.zero_grad(set_to_none=True)
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _training_step(model, x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {'device': device, 'peak_bytes': int(peak), 'peak_minus_start_bytes': int(peak - before),
                'measure': 'torch.cuda.max_memory_allocated'}
    before = _rss_bytes()
    _training_step(model, x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {'device': 'cpu', 'peak_bytes': int(peak), 'peak_minus_start_bytes': int(peak - before),
            'measure': 'peak RSS of a fresh subprocess (ru_maxrss)'}


def measure_training_memory(net_opt: dict[str, Any], size: Sequence[int], reversible: bool,
                            device: str = 'cpu', threads: int | None = None) -> dict[str, Any]:
    """Peak memory of one training step on one ``size`` patch with all reversible flags on/off (see docstring)."""
    if device.startswith('cuda'):
        model = build_model(net_opt)
        set_reversible(model, reversible)
        torch.manual_seed(0)
        result = _memory_in_process(model, size, device)
        del model
        torch.cuda.empty_cache()
        return {**result, 'reversible': reversible}
    payload = json.dumps({'net': net_opt, 'size': list(size), 'reversible': reversible, 'threads': threads})
    proc = subprocess.run([sys.executable, '-m', 'fke_basicsr.profile', '--_memory-child', payload],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{')]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'memory measurement subprocess failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}')
    return {**json.loads(lines[-1]), 'reversible': reversible}


def _memory_child(payload: str) -> int:
    spec = json.loads(payload)
    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    model = build_model(spec['net'])
    set_reversible(model, bool(spec['reversible']))
    torch.manual_seed(0)
    print(json.dumps(_memory_in_process(model, spec['size'], 'cpu')))
    return 0


def measure_latency(model: nn.Module, x: Tensor, warmup: int = 2, reps: int = 5) -> dict[str, Any]:
    """Eval-mode no_grad forward latency: ``warmup`` untimed runs, then ``reps`` timed ones (seconds)."""
    if warmup < 0 or reps < 1:
        raise ValueError(f'warmup must be >= 0 and reps >= 1, got warmup={warmup}, reps={reps}')
    model.eval()
    cuda = x.device.type == 'cuda'
    times = []
    with torch.no_grad():
        for i in range(warmup + reps):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return {'device': str(x.device) if not cuda else f'{x.device} ({torch.cuda.get_device_name(x.device)})',
            'threads': torch.get_num_threads(), 'warmup': warmup, 'reps': reps,
            'median_s': float(np.median(times)), 'mean_s': float(np.mean(times)), 'min_s': float(np.min(times))}


# ------------------------------------------------------------------------------------------------ CLI


def profile_model(net_opt: dict[str, Any], size: Sequence[int], memory: bool = False, latency: bool = False,
                  device: str = 'cpu', warmup: int = 2, reps: int = 5, threads: int | None = None,
                  stub_scan: bool = True) -> dict[str, Any]:
    """Everything the CLI reports, as a JSON-ready dict."""
    torch.manual_seed(0)
    model = build_model(net_opt)
    x = _example_input(model, size)
    macs, ops = count_all(model, x, stub_scan)
    result: dict[str, Any] = {
        'network': net_opt, 'input': [1, int(x.shape[1]), int(size[0]), int(size[1])],
        'params': count_parameters(model), 'macs': asdict(macs), 'ops': asdict(ops),
    }
    if latency:
        model.to(device)
        result['latency'] = measure_latency(model, x.to(device), warmup, reps)
        model.to('cpu')
    if memory:
        del model
        result['training_memory'] = [measure_training_memory(net_opt, size, rev, device, threads)
                                     for rev in (True, False)]
    return result


def _g(n: float) -> str:
    return f'{n / 1e9:,.3f} G'


def format_table(r: dict[str, Any]) -> str:
    """Human-readable table of :func:`profile_model`'s result."""
    m, o = r['macs'], r['ops']
    rows = [('network', json.dumps(r['network'])), ('input', 'x'.join(map(str, r['input']))),
            ('parameters', f"{r['params']:,} ({r['params'] / 1e6:.2f} M)"),
            ('MACs conv+linear (no bias)', _g(m['macs_conv_linear'])),
            ('MACs ptflops-module convention', _g(m['macs_ptflops']) + '   <- the paper\'s "FLOPs"'),
            ('MACs einsum (in neither)', _g(m['macs_einsum'])),
            ('FFT real ops (2.5 n log2 n)', f"{_g(o['fft_ops'])} in {o['fft_calls']} calls"),
            ('FKE spectral product ops (6/complex)', _g(o['fke_spectral_product_ops'])),
            ('selective-scan ops (7N+5 per b,d,t)', f"{_g(o['scan_ops'])} in {o['scan_calls']} calls")]
    if 'latency' in r:
        lat = r['latency']
        rows.append(('latency (eval, no_grad)', f"median {lat['median_s']:.3f} s, mean {lat['mean_s']:.3f} s, "
                                                f"min {lat['min_s']:.3f} s over {lat['reps']} reps "
                                                f"(+{lat['warmup']} warm-up) on {lat['device']}, "
                                                f"{lat['threads']} threads"))
    for mem in r.get('training_memory', []):
        rows.append((f"train peak memory, reversible {'on' if mem['reversible'] else 'off'}",
                     f"{mem['peak_bytes'] / 2 ** 20:,.0f} MiB (step: +{mem['peak_minus_start_bytes'] / 2 ** 20:,.0f} "
                     f"MiB) [{mem['measure']}]"))
    width = max(len(k) for k, _ in rows)
    return '\n'.join(f'{k.ljust(width)}  {v}' for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == '--_memory-child':
        import fke_basicsr  # noqa: F401
        return _memory_child(argv[1])
    from fke_basicsr.io_utils import OneLineParser, keyboard_interrupt_exit
    p = OneLineParser(prog='python -m fke_basicsr.profile', description=__doc__.split('\n')[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--opt', help='train/test YAML whose network_g is profiled')
    src.add_argument('--arch', help='registered arch name, e.g. DeepRFTv2 or ATD')
    p.add_argument('--variant', help="arch variant (DeepRFTv2: 'B' or 'S')")
    p.add_argument('--set', dest='sets', action='append', metavar='KEY=VALUE',
                   help='override a network option (YAML value), repeatable, e.g. --set upscale=4 --set fke=true')
    p.add_argument('--size', nargs=2, type=int, required=True, metavar=('H', 'W'), help='input height and width')
    p.add_argument('--json', help='also write the result as JSON to this file')
    p.add_argument('--memory', action='store_true', help='peak training memory, reversible on and off')
    p.add_argument('--latency', action='store_true', help='inference latency')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='device for latency / memory (default: cuda if available)')
    p.add_argument('--warmup', type=int, default=2, help='untimed warm-up runs (latency)')
    p.add_argument('--reps', type=int, default=5, help='timed runs (latency)')
    p.add_argument('--threads', type=int, help='torch CPU threads')
    p.add_argument('--real-scan', action='store_true',
                   help='run the real selective scan while counting (default: a shape-exact stand-in; same counts)')
    args = p.parse_args(argv)
    if min(args.size) < 1:
        p.error(f'--size: expected positive H W, got {args.size}')
    if args.threads is not None and args.threads < 1:
        p.error(f'--threads: expected an integer >= 1, got {args.threads}')
    if args.warmup < 0 or args.reps < 1:
        p.error(f'--warmup must be >= 0 and --reps >= 1, got {args.warmup} and {args.reps}')
    if not (args.device == 'cpu' or args.device.startswith('cuda')):
        p.error(f'--device: expected cpu, cuda or cuda:N, got {args.device!r}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        p.error(f'--device: {args.device} requested but CUDA is not available; use --device cpu')
    if args.json:  # checked before the count, not after it
        target = Path(args.json)
        if target.is_dir():
            p.error(f'--json: {target} is a folder; give a file name, e.g. {target / "profile.json"}')
        if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
            p.error(f'--json: cannot write into {target.parent} (missing or not writable)')
    with keyboard_interrupt_exit('profile'):
        return _run(args)


def _run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        net = network_options(args.opt, args.arch, args.variant, parse_sets(args.sets))
        result = profile_model(net, args.size, args.memory, args.latency, args.device, args.warmup, args.reps,
                               args.threads, stub_scan=not args.real_scan)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(format_table(result))
    if args.json:
        from fke_basicsr.io_utils import atomic_write
        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=1).encode('utf-8')))
    return 0


if __name__ == '__main__':
    sys.exit(main())
