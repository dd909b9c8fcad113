"""Mamba (S6) selective scan with interchangeable backends (docs/scan_backends.md; EVSS2D in docs/architecture.md).

Semantics are those of ``mamba_ssm.selective_scan_fn`` with real ``A`` and input-dependent ``B``/``C``::

    Δ = softplus(delta + delta_bias)            (bias and softplus optional)
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t B_t u_t    (h_{-1} = 0, one state of size N per channel)
    y_t = <C_t, h_t> + D u_t;  out = y ⊙ silu(z)  (D and z optional)

Backends:
  * ``'mamba'``: mamba_ssm's CUDA kernel, used when it imports and the tensors are on CUDA.
  * ``'torch'``: a two-level chunked scan in plain PyTorch (any device, exact to fp32 rounding) whose custom
    backward is the reverse-time scan of the gradient. It only ever multiplies decays ``exp(ΔA)``, never divides
    by them, so it stays finite for any decay and chunk size.
  * ``'ref'``: a sequential loop over time, the readable test oracle.

Pick one with the ``backend`` argument, else the ``FKE_SCAN_BACKEND`` environment variable, else ``'auto'``.
"""
from __future__ import annotations

import functools
import math
import os
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['SCAN_BACKEND_ENV', 'BACKENDS', 'resolve_backend', 'selective_scan', 'selective_scan_ref',
           'selective_scan_torch']

SCAN_BACKEND_ENV = 'FKE_SCAN_BACKEND'
BACKENDS = ('auto', 'mamba', 'torch', 'ref')

# The 'torch' backend works on (batch, channel) slices of at most this many (b, d, L, N) elements (64 MiB in
# fp32), so its one full-size tensor (the states its backward walks back through) stays bounded for any L.
MAX_SLICE_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------------------- backend selection
@functools.lru_cache(maxsize=None)
def _mamba_kernel() -> tuple[Callable | None, str]:
    """Import mamba_ssm's selective_scan_fn once; (fn, '') or (None, why it is unavailable)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split('.')[0] == 'mamba_ssm':
            return None, 'mamba_ssm not installed'
        return None, f'mamba_ssm not importable ({err})'
    except Exception as err:  # a broken CUDA extension raises ImportError/OSError/RuntimeError alike
        return None, f'mamba_ssm not importable ({type(err).__name__}: {err})'
    return selective_scan_fn, ''


def resolve_backend(device: torch.device | str, requested: str | None = None) -> tuple[str, str]:
    """Backend for tensors on ``device``: (name, human-readable reason). Argument > env var > 'auto'."""
    device = torch.device(device)
    source = 'backend argument'
    if requested is None:
        requested = os.environ.get(SCAN_BACKEND_ENV, '').strip() or 'auto'
        source = f'{SCAN_BACKEND_ENV}={requested}' if requested != 'auto' else 'default'
    if not isinstance(requested, str) or requested.strip().lower() not in BACKENDS:
        raise ValueError(f'selective-scan backend (from {source}) must be one of {BACKENDS}, got {requested!r}')
    requested = requested.strip().lower()
    if requested in ('torch', 'ref'):
        return requested, f'requested by {source}'
    if requested == 'mamba':
        if device.type != 'cuda':
            raise RuntimeError(f"selective-scan backend 'mamba' (requested by {source}) needs CUDA tensors, "
                               f"got device {device}; use backend 'torch' or 'auto'")
        kernel, why = _mamba_kernel()
        if kernel is None:
            raise RuntimeError(f"selective-scan backend 'mamba' (requested by {source}) is unavailable: {why}. "
                               "Install mamba-ssm with its CUDA extension, or use backend 'torch' or 'auto'")
        return 'mamba', f'requested by {source}'
    if device.type != 'cuda':
        return 'torch', f'auto: tensors on {device.type}, the mamba_ssm kernel is CUDA-only'
    kernel, why = _mamba_kernel()
    if kernel is None:
        return 'torch', f'auto: {why}'
    return 'mamba', 'auto: mamba_ssm CUDA kernel available'


# -------------------------------------------------------------------------------------------- input checks
def _shape(t: Tensor) -> str:
    return '(' + ', '.join(str(s) for s in t.shape) + ')'


def _check_inputs(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                  z: Tensor | None, delta_bias: Tensor | None) -> int:
    """Validate shapes, dtypes and devices (selective_scan_fn's conventions); return the number of B/C groups."""
    named = {'u': u, 'delta': delta, 'A': A, 'B': B, 'C': C, 'D': D, 'z': z, 'delta_bias': delta_bias}
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f'{name} must be a torch.Tensor, got {type(t).__name__}')
        if t.is_complex():
            raise ValueError(f'{name} must be real (complex S4D variants are not supported), got {t.dtype}')
        if not t.is_floating_point():
            raise ValueError(f'{name} must be a floating-point tensor, got {t.dtype}')
        if t.device != u.device:
            raise ValueError(f'{name} is on {t.device} but u is on {u.device}; all inputs must share a device')
    if u.dim() != 3:
        raise ValueError(f'u must have shape (batch, channels, length), got {_shape(u)}')
    b, d, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(f'delta must have the shape of u ({b}, {d}, {length}), got {_shape(delta)}')
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f'A must have shape (channels={d}, d_state), got {_shape(A)}')
    n = A.shape[1]
    groups = 0
    for name, t in (('B', B), ('C', C)):
        if t.dim() == 3 and t.shape == (b, n, length):
            g = 1
        elif t.dim() == 4 and t.shape[0] == b and t.shape[2:] == (n, length) and t.shape[1] >= 1:
            g = t.shape[1]
        else:
            raise ValueError(f'{name} must have shape (batch={b}, d_state={n}, length={length}) or '
                             f'(batch={b}, groups, d_state={n}, length={length}), got {_shape(t)}')
        if d % g:
            raise ValueError(f'{name} has {g} groups, which must divide the {d} channels of u')
        if groups and g != groups:
            raise ValueError(f'B and C must have the same number of groups, got {groups} and {g}')
        groups = g
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f'{name} must have shape (channels={d},), got {_shape(t)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z must have the shape of u ({b}, {d}, {length}), got {_shape(z)}')
    return groups


def _compute_dtype(u: Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs (the scan always runs in fp32, as mamba's kernel does); fp64 stays fp64."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _as_groups(t: Tensor, dtype: torch.dtype) -> Tensor:
    """B or C as (batch, groups, d_state, length) in ``dtype``."""
    t = t.to(dtype)
    return t.unsqueeze(1) if t.dim() == 3 else t


def _step_sizes(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool, dtype: torch.dtype) -> Tensor:
    """Δ = softplus(delta + bias), each part optional, in the compute dtype."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    return F.softplus(delta) if delta_softplus else delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, out_dtype: torch.dtype) -> Tensor:
    """out = (y + D u) ⊙ silu(z), cast back to u's dtype."""
    if D is not None:
        y = y + D.to(y.dtype)[:, None] * u
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


# ------------------------------------------------------------------------------------------ 'ref' backend
def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                       z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential-in-time selective scan (mamba's selective_scan_ref semantics): the fast paths' oracle."""
    groups = _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype = _compute_dtype(u)
    with torch.autocast(u.device.type, enabled=False):
        x = u.to(dtype)
        dt = _step_sizes(delta, delta_bias, delta_softplus, dtype)
        A = A.to(dtype)
        per_group = u.shape[1] // groups
        # Channel i reads group i // (channels / groups).
        Bd = _as_groups(B, dtype).repeat_interleave(per_group, dim=1)  # (b, d, n, L)
        Cd = _as_groups(C, dtype).repeat_interleave(per_group, dim=1)
        h = x.new_zeros(x.shape[0], x.shape[1], A.shape[1])
        ys = []
        for t in range(x.shape[2]):
            h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * x[:, :, t])[..., None] * Bd[..., t]
            ys.append((h * Cd[..., t]).sum(-1))
        out = _finish(torch.stack(ys, dim=-1), x, D, z, u.dtype)
    return (out, h) if return_last_state else out


# ---------------------------------------------------------------------------------------- 'torch' backend
# A sequence of length L = K*T is cut into K chunks of T steps. The scan then runs
#   1. a loop over the T steps of all K chunks at once from a zero state (local chunk end states),
#   2. a loop over the K chunks carrying the true state into each chunk (a chunk's decay is exp(A ΣΔ)),
#   3. the loop over T again from the carried states, reading out y_t = <C_t, h_t> step by step.
# Each step works on one "slab" (b, K, n, d) holding that step of every chunk, with channels innermost so the
# broadcasts Δ⊗A and Δu⊗B vectorise. The decays exp(Δ_t A) and inputs Δ_t u_t B_t are made per step from the
# (b, d, L)-sized inputs and never stored at full (b, d, L, n) size, so slabs stay in cache. Work is O(L) and
# the Python loop count is 2T + K ≈ 3√L. The backward (reverse-time adjoint scan) has the same structure; it
# stores the recomputed states, the only full-size tensor, because it walks back in time.

def _chunk_len(length: int) -> int:
    """T ≈ √L balances the time-step loops against the chunk-carry loop."""
    return max(1, math.ceil(math.sqrt(length)))


def _to_steps(x: Tensor, T: int, K: int) -> Tensor:
    """(b, c, L) -> (T, b, K, c), zero-padded to K*T (Δ=0 is an identity step); step t of all chunks: [t]."""
    b, c, length = x.shape
    if K * T != length:
        x = F.pad(x, (0, K * T - length))
    # Two cheap copies (a 2-D transpose, then a move of whole rows) beat one 4-D permutation.
    return x.transpose(1, 2).contiguous().view(b, K, T, c).permute(2, 0, 1, 3).contiguous()


def _from_steps(x: Tensor, length: int) -> Tensor:
    """(T, b, K, c) -> (b, c, L), dropping the padding."""
    T, b, K, c = x.shape
    return x.permute(1, 2, 0, 3).reshape(b, K * T, c)[:, :length].transpose(1, 2).contiguous()


class _Steps:
    """Per-step slabs of one chunked scan: decays exp(Δ_t A), inputs Δ_t u_t B_t, and batched contractions."""

    def __init__(self, dt: Tensor, w: Tensor, At: Tensor, Bm: Tensor, Cm: Tensor, T: int):
        self.length, self.T = dt.shape[-1], T
        self.K = math.ceil(self.length / T)
        self.b, (self.n, self.d) = dt.shape[0], At.shape
        self.At = At
        self.dt, self.w = _to_steps(dt, T, self.K), _to_steps(w, T, self.K)  # (T, b, K, d)
        self.B, self.C = _to_steps(Bm, T, self.K), _to_steps(Cm, T, self.K)  # (T, b, K, n)

    def slab(self) -> Tensor:
        """An uninitialised (b, K, n, d) slab."""
        return self.dt.new_empty(self.b, self.K, self.n, self.d)

    def steps(self, c: int) -> Tensor:
        """An uninitialised per-step (T, b, K, c) tensor, the layout of _to_steps."""
        return self.dt.new_empty(self.T, self.b, self.K, c)

    def decay(self, t: int, out: Tensor) -> Tensor:
        """exp(Δ_t ⊗ A) into out (b, K, n, d)."""
        return torch.mul(self.dt[t].unsqueeze(-2), self.At, out=out).exp_()

    def outer(self, v: Tensor, s: Tensor, t: int) -> Tensor:
        """v_t ⊗ s_t for per-step v (T, b, K, d) and s (T, b, K, n): a new slab (b, K, n, d)."""
        return torch.mul(v[t].unsqueeze(-2), s[t].unsqueeze(-1))

    def chunk_decay(self) -> Tensor:
        """∏_t exp(Δ_t A) per chunk, as exp(A ΣΔ): a product of decays, never a ratio. (b, K, n, d)."""
        return torch.exp(self.dt.sum(0).unsqueeze(-2) * self.At)

    def mix_n(self, s: Tensor, h: Tensor, t: int, out: Tensor) -> None:
        """out[t] = Σ_n s_t[n] h[n, :] for per-step s (T, b, K, n) and a slab h, as one batched matmul."""
        bk = self.b * self.K
        torch.bmm(s[t].reshape(bk, 1, self.n), h.view(bk, self.n, self.d), out=out[t].view(bk, 1, -1))

    def mix_d(self, h: Tensor, v: Tensor, t: int, out: Tensor) -> None:
        """out[t] = Σ_d h[:, d] v_t[d] for a slab h and per-step v (T, b, K, d), as one batched matmul."""
        bk = self.b * self.K
        torch.bmm(h.view(bk, self.n, self.d), v[t].reshape(bk, self.d, 1), out=out[t].view(bk, -1, 1))


def _carry(local: Tensor, decay: Tensor, reverse: bool) -> tuple[Tensor, Tensor]:
    """Sequential pass over chunks: what enters each chunk (b, K, n, d), and what leaves the last one."""
    entering = torch.empty_like(local)
    carry = torch.zeros_like(local[:, 0])
    for k in (range(local.shape[1] - 1, -1, -1) if reverse else range(local.shape[1])):
        entering[:, k] = carry
        carry = torch.addcmul(local[:, k], decay[:, k], carry)
    return entering, carry


class _ChunkedScan(torch.autograd.Function):
    """Core scan of one (batch, channel) slice sharing one B/C group: (Δ, Δu, Aᵀ, B, C) -> (y, h_L).

    Only the chunk start states are saved: like the CUDA kernel, the backward recomputes the states instead of
    keeping a (b, d, L, n) tensor alive between forward and backward.
    """

    @staticmethod
    def forward(ctx, dt: Tensor, w: Tensor, At: Tensor, Bm: Tensor, Cm: Tensor, chunk: int
                ) -> tuple[Tensor, Tensor]:
        s = _Steps(dt, w, At, Bm, Cm, chunk)
        a = s.slab()
        h = s.outer(s.w, s.B, 0)
        for t in range(1, s.T):  # 1. local end states
            h = s.outer(s.w, s.B, t).addcmul_(s.decay(t, a), h)
        starts, last = _carry(h, s.chunk_decay(), reverse=False)  # 2.
        y = s.steps(s.d)
        h = starts
        for t in range(s.T):  # 3. states from the true chunk starts, read out at once
            h = s.outer(s.w, s.B, t).addcmul_(s.decay(t, a), h)
            s.mix_n(s.C, h, t, y)
        ctx.save_for_backward(dt, w, At, Bm, Cm, starts)
        ctx.chunk = chunk
        return _from_steps(y, s.length), last.transpose(-1, -2)

    @staticmethod
    def backward(ctx, gy: Tensor | None, glast: Tensor | None):
        dt, w, At, Bm, Cm, starts = ctx.saved_tensors
        with torch.autocast(dt.device.type, enabled=False):
            s = _Steps(dt, w, At, Bm, Cm, ctx.chunk)
            T = s.T
            gy = _to_steps(gy if gy is not None else torch.zeros_like(dt), T, s.K)
            a, a_next, q = s.slab(), s.slab(), s.slab()
            hs = dt.new_empty(T, s.b, s.K, s.n, s.d)  # states, needed backwards in time
            h = starts
            for t in range(T):
                h = torch.addcmul(s.outer(s.w, s.B, t), s.decay(t, a), h, out=hs[t])

            def readout_grad(t: int) -> Tensor:  # ∂L/∂h_t through y_t (and through h_L at the very end)
                g = s.outer(gy, s.C, t)
                if t == T - 1 and glast is not None:
                    g[:, -1] += glast.transpose(-1, -2)  # padded steps are identities: slab T-1 of chunk K-1 is h_L
                return g

            # Adjoint λ_t = g_t + a_{t+1} λ_{t+1}: local pass, carry across chunks, then the full pass.
            lam = readout_grad(T - 1)
            for t in range(T - 2, -1, -1):
                lam = readout_grad(t).addcmul_(s.decay(t + 1, a_next), lam)
            leaving = s.decay(0, a) * lam  # what each chunk hands to the previous chunk's last step
            ends, _ = _carry(leaving, s.chunk_decay(), reverse=True)
            gdt, gw, gB, gC = s.steps(s.d), s.steps(s.d), s.steps(s.n), s.steps(s.n)
            gAt = torch.zeros_like(a)
            lam = ends
            for t in range(T - 1, -1, -1):
                lam = readout_grad(t).add_(lam) if t == T - 1 else readout_grad(t).addcmul_(a_next, lam)
                s.mix_d(hs[t], gy, t, gC)  # ∂L/∂C_t = Σ_d gy h_t
                s.mix_n(s.B, lam, t, gw)  # ∂L/∂(Δu)_t = Σ_n B λ_t
                s.mix_d(lam, s.w, t, gB)  # ∂L/∂B_t = Σ_d Δu λ_t
                # q = λ_t ⊙ a_t ⊙ h_{t-1} = ∂L/∂(Δ_t A)
                torch.mul(lam, s.decay(t, a_next), out=q).mul_(hs[t - 1] if t > 0 else starts)
                gAt.addcmul_(q, s.dt[t].unsqueeze(-2))
                torch.sum(q.mul_(At), dim=-2, out=gdt[t])
            del hs
        return (_from_steps(gdt, s.length), _from_steps(gw, s.length), gAt.sum((0, 1)),
                _from_steps(gB, s.length), _from_steps(gC, s.length), None)


def _slices(batch: int, channels: int, groups: int, length: int, n: int) -> list[tuple[slice, slice, int]]:
    """(batch slice, channel slice, group) blocks of at most MAX_SLICE_ELEMENTS (b, d, L, N) elements."""
    per_group = channels // groups
    per_channel = max(1, length * n)
    if per_group * per_channel <= MAX_SLICE_ELEMENTS:
        bs, ds = max(1, MAX_SLICE_ELEMENTS // (per_group * per_channel)), per_group
    else:
        bs, ds = 1, max(1, MAX_SLICE_ELEMENTS // per_channel)
    out = []
    for g in range(groups):
        for b0 in range(0, batch, bs):
            for d0 in range(g * per_group, (g + 1) * per_group, ds):
                out.append((slice(b0, min(b0 + bs, batch)), slice(d0, min(d0 + ds, (g + 1) * per_group)), g))
    return out


def _scan_torch_core(dt: Tensor, w: Tensor, A: Tensor, Bg: Tensor, Cg: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Run _ChunkedScan over memory-bounded slices; Bg/Cg are (b, g, n, L)."""
    b, d, length = dt.shape
    groups = Bg.shape[1]
    parts = _slices(b, d, groups, length, A.shape[1])
    At = A.t().contiguous()  # (n, d): channels innermost, see the layout note above
    if len(parts) == 1:
        return _ChunkedScan.apply(dt, w, At, Bg[:, 0], Cg[:, 0], chunk)
    ys, lasts = [], []
    for bsl, dsl, g in parts:
        y, last = _ChunkedScan.apply(dt[bsl, dsl], w[bsl, dsl], At[:, dsl], Bg[bsl, g], Cg[bsl, g], chunk)
        ys.append((bsl, dsl, y))
        lasts.append((bsl, dsl, last))
    # Reassemble with differentiable cats: channels within a batch block, then batch blocks.
    return _assemble(ys, b, d), _assemble(lasts, b, d)


def _assemble(pieces: list[tuple[slice, slice, Tensor]], batch: int, channels: int) -> Tensor:
    """Concatenate (batch slice, channel slice, tensor) blocks back into the full (b, d, ...) tensor."""
    rows: dict[int, list[tuple[int, Tensor]]] = {}
    for bsl, dsl, t in pieces:
        rows.setdefault(bsl.start, []).append((dsl.start, t))
    return torch.cat([torch.cat([t for _, t in sorted(row, key=lambda r: r[0])], dim=1)
                      for _, row in sorted(rows.items())], dim=0)


def selective_scan_torch(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                         z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                         return_last_state: bool = False, chunk_size: int | None = None
                         ) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked parallel selective scan in plain PyTorch (docs/scan_backends.md): differentiable, any device."""
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f'chunk_size must be a positive int or None, got {chunk_size!r}')
    dtype = _compute_dtype(u)
    with torch.autocast(u.device.type, enabled=False):
        x = u.to(dtype)
        dt = _step_sizes(delta, delta_bias, delta_softplus, dtype)
        chunk = min(chunk_size or _chunk_len(x.shape[-1]), x.shape[-1])
        y, last = _scan_torch_core(dt, dt * x, A.to(dtype), _as_groups(B, dtype), _as_groups(C, dtype), chunk)
        out = _finish(y, x, D, z, u.dtype)
    return (out, last) if return_last_state else out


# ------------------------------------------------------------------------------------------ public entry
def selective_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                   z: Tensor | None = None, delta_bias: Tensor | None = None, delta_softplus: bool = False,
                   return_last_state: bool = False, backend: str | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm.selective_scan_fn's signature; backend per resolve_backend."""
    name, reason = resolve_backend(u.device, backend)
    if name == 'mamba' and u.dtype == torch.float64 and reason.startswith('auto'):
        name = 'torch'  # the CUDA kernel has no fp64 build; 'auto' stays exact instead of failing
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state)
    if name == 'ref':
        return selective_scan_ref(u, delta, A, B, C, **kwargs)
    if name == 'torch':
        return selective_scan_torch(u, delta, A, B, C, **kwargs)
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    kernel, _ = _mamba_kernel()
    # The kernel wants delta, variable B/C and z in u's dtype, and A, D, delta_bias in fp32; it computes in fp32.
    same = lambda t: None if t is None else t.to(u.dtype)  # noqa: E731
    fp32 = lambda t: None if t is None else t.float()  # noqa: E731
    return kernel(u, same(delta), fp32(A), same(B), same(C), D=fp32(D), z=same(z), delta_bias=fp32(delta_bias),
                  delta_softplus=delta_softplus, return_last_state=return_last_state)
