"""Reversible column (RevCol-style) autograd function, generic over levels and fusions (paper §3.3.1-3.3.2).

A column has ``n`` levels. Level ``j`` computes::

    c_j = alphas[j] * carried[j] + fns[j](inp_j, *extras[j]),    inp_0 = x,  inp_j = c_{j-1} (j >= 1)

and the column returns ``[c_0, ..., c_{n-1}]``. ``carried[j]`` is the previous column's level-``j`` state
(or a U-Net skip tensor). ``None`` or the int ``0`` means "no carried term" (first column): ``c_j = fns[j](...)``.

Encoding of ``extras`` (``()`` = no extra argument at any level, else one sequence per level). Each item is

* a ``Tensor``: an ordinary input of ``fns[j]`` that receives its gradient (e.g. the injected feature ``u_j``);
* ``CarriedRef(k)`` with ``k > j``: stands for ``carried[k]`` exactly as given (a tensor, or ``0``/``None`` in
  the first column). The FKE sub-ResNet fuses the previous column's level ``j+1`` state into level ``j``.
  Its gradient is added to the one ``carried[k]`` gets from its alpha term. ``k > j`` is required because the
  backward pass reconstructs ``carried[k]`` at level ``k`` before it re-runs level ``j``;
* anything else (``int``, ``float``, ``None``): passed through unchanged.

The four usages in DeepRFTv2 (p = previous column's outputs, 0 in the first column)::

    encoder       reversible_column(levels, alphas, x, [p0, p1, p2])
    mid-encoder   reversible_column(levels, alphas, x, [p0, p1, p2], extras=[[u0], [u1], [u2]])
    decoder       reversible_column(levels, alphas, latent, [skip2, skip1, d_prev])
    FKE sub-Res   reversible_column(levels, alphas, x0, [p0, p1, p2, p3],
                                    extras=[[CarriedRef(1)], [CarriedRef(2)], [CarriedRef(3)], []])

``save_memory=False`` is plain autograd. ``save_memory=True`` runs the column inside one
``torch.autograd.Function`` that keeps only ``x``, the new ``c_j`` and the tensor extras; every intermediate
activation of the ``fns`` is freed, and so is ``carried`` (nothing holds it for backward). The backward pass
walks the levels in reverse order; for each it restores the level's RNG state (CPU and CUDA) and autocast state,
re-runs ``F_j`` on detached inputs under ``enable_grad``, back-propagates the gradient of ``c_j`` (output gradient
plus what level ``j+1`` sent back through its input), and reconstructs ``carried_j = (c_j - F_j(...)) / alpha_j``
under ``no_grad``: that gives the alpha gradient and feeds the ``CarriedRef`` of lower levels, without the
previous column's features ever being stored. Alphas are clamped to ``|alpha| >= 1e-3`` before every forward so
the division is safe (:func:`clamp_alphas_`).

Parameters: when ``fns[j]`` is an ``nn.Module`` (or a bound method of one), its parameters are passed through the
Function as inputs, so their gradients are returned like any other (``torch.autograd.grad`` and DDP hooks behave
as with plain autograd). Any other callable is back-propagated the RevCol way (``torch.autograd.backward`` on the
recomputed graph), which accumulates into the ``.grad`` of whatever leaves it reaches. ``fns`` must not modify
their inputs in place (the memory-saving path shares storage with the saved tensors).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

__all__ = ['CarriedRef', 'clamp_alphas_', 'reversible_column']


class CarriedRef(NamedTuple):
    """Stands for ``carried[index]`` inside ``extras`` (see the module docstring)."""
    index: int


def clamp_alphas_(alphas: Sequence[Tensor | None], min_abs: float = 1e-3) -> None:
    """In place, under no_grad: ``|alpha| >= min_abs`` keeping the sign (0 -> +min_abs): the inverse divides by it."""
    with torch.no_grad():
        for a in alphas:
            if a is None:
                continue
            # through .data: the version counter is not bumped, so a column may run twice (e.g. per tile) before
            # backward without invalidating saved alphas; values only change when |alpha| < min_abs, i.e. after
            # an optimiser step, never between a forward and its backward.
            a.data.copy_(torch.where(a.data >= 0, a.data.clamp(min=min_abs), a.data.clamp(max=-min_abs)))


def _absent(v: Any) -> bool:
    """``None`` or the int 0 (not bool) mean 'no carried term'."""
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v == 0)


def _validate(fns, alphas, x, carried, extras) -> int:
    n = len(fns)
    if n == 0:
        raise ValueError('fns: expected at least one level, got an empty sequence')
    if len(alphas) != n:
        raise ValueError(f'alphas: expected {n} entries (one per level), got {len(alphas)}')
    if len(carried) != n:
        raise ValueError(f'carried: expected {n} entries (one per level), got {len(carried)}')
    if len(extras) not in (0, n):
        raise ValueError(f'extras: expected () or {n} sequences (one per level), got {len(extras)}')
    if not isinstance(x, Tensor):
        raise ValueError(f'x: expected a Tensor, got {type(x).__name__}')
    for j, (a, c) in enumerate(zip(alphas, carried)):
        if not _absent(c) and not isinstance(c, Tensor):
            raise ValueError(f'carried[{j}]: expected a Tensor, None or 0, got {type(c).__name__}')
        if not _absent(c) and not isinstance(a, Tensor):
            raise ValueError(f'alphas[{j}]: expected a Tensor (carried[{j}] is a tensor), got {type(a).__name__}')
    for j, ex in enumerate(extras):
        for item in ex:
            if isinstance(item, CarriedRef) and not j < item.index < n:
                raise ValueError(f'extras[{j}]: CarriedRef({item.index}) must refer to a higher level '
                                 f'{j} < k < {n} (it is reconstructed before level {j} is re-run)')
    return n


def _resolve(ex: Sequence[Any], carried: Sequence[Any]) -> list[Any]:
    return [carried[item.index] if isinstance(item, CarriedRef) else item for item in ex]


def _column_plain(fns, alphas, x, carried, extras) -> list[Tensor]:
    """The reference: plain autograd, one level after the other."""
    out, inp = [], x
    for j, fn in enumerate(fns):
        y = fn(inp, *_resolve(extras[j] if extras else (), carried))
        c = y if _absent(carried[j]) else alphas[j] * carried[j] + y
        out.append(c)
        inp = c
    return out


def _module_params(fn: Callable) -> list[nn.Parameter] | None:
    """Trainable parameters of a Module or bound Module method; None for other callables."""
    owner = fn if isinstance(fn, nn.Module) else getattr(fn, '__self__', None)
    if not isinstance(owner, nn.Module):
        return None
    return [p for p in owner.parameters() if p.requires_grad]


@dataclass
class _Plan:
    """The non-tensor structure of one call; ``slot`` = position in the flat tensor inputs of the Function."""
    fns: Sequence[Callable]
    carried: list[Any]           # per level: ('slot', i) for a tensor, or the absent value as given (None / 0)
    alpha: list[int | None]      # per level: slot of alpha, None when unused (no carried term)
    extras: list[list[tuple[str, Any]]]   # ('tensor', slot) | ('ref', k) | ('const', value)
    params: list[list[int] | None]        # per level: slots of its parameters; None = RevCol-style fallback
    devices: list[int]           # CUDA devices whose RNG state is saved


def _cuda_devices(tensors: Sequence[Tensor]) -> list[int]:
    return sorted({t.get_device() for t in tensors if t.is_cuda})


def _rng_state(devices: list[int]) -> tuple[Tensor, list[Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _autocast_devices() -> list[str]:
    return ['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu']


def _autocast_state() -> tuple[list[tuple[str, bool, torch.dtype]], bool]:
    devs = [(d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in _autocast_devices()]
    return devs, torch.is_autocast_cache_enabled()


@contextlib.contextmanager
def _replay(rng: tuple[Tensor, list[Tensor]], devices: list[int], autocast) -> Any:
    """Restore one level's forward RNG and autocast state without disturbing the global RNG."""
    devs, cache = autocast
    with torch.random.fork_rng(devices=devices), contextlib.ExitStack() as stack:
        torch.set_rng_state(rng[0])
        for d, state in zip(devices, rng[1]):
            torch.cuda.set_rng_state(state, d)
        for dev, enabled, dtype in devs:
            stack.enter_context(torch.autocast(dev, dtype=dtype, enabled=enabled, cache_enabled=cache))
        yield


def _acc(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if b is None:
        return a
    return b if a is None else a + b


def _backprop_level(ctx, pslots: list[int] | None, needs: Sequence[bool], y: Tensor, g: Tensor,
                    leaves: list[tuple[str, int, Tensor]], g_flat: list, g_c: list, g_carried: list) -> None:
    """Back-propagate g through one recomputed level; route the gradients of its leaves and parameters."""
    gy = g.sum_to_size(y.shape).to(y.dtype)
    if pslots is None:
        # RevCol way: parameters accumulate their .grad directly; the inputs' grads are read off the leaves
        torch.autograd.backward(y, gy)
        grads = [leaf.grad for _, _, leaf in leaves]
    else:
        pslots = [s for s in pslots if needs[s]]
        grads = torch.autograd.grad(y, [leaf for _, _, leaf in leaves] + [ctx.params[s] for s in pslots],
                                    gy, allow_unused=True)
        for s, gp in zip(pslots, grads[len(leaves):]):
            g_flat[s] = _acc(g_flat[s], gp)
    for (kind, where, _), gl in zip(leaves, grads):
        if kind == 'slot':
            g_flat[where] = _acc(g_flat[where], gl)
        elif kind == 'c':
            g_c[where] = _acc(g_c[where], gl)
        else:
            g_carried[where] = _acc(g_carried[where], gl)


class _ReversibleColumn(torch.autograd.Function):
    """Memory-saving column: forward without a graph, backward by recomputation + reconstruction (paper Eq. 13, 15, 17).

    Inputs: the plan, the index where the parameters start in ``flat``, then ``flat`` = x, carried tensors,
    alphas, tensor extras, parameters (the parameters only route their gradients; they are module state and
    are read from the modules again in backward).
    """

    @staticmethod
    def forward(ctx, plan: _Plan, param_start: int, *flat: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)   # an unused output's gradient stays None: its level is skipped
        x = flat[0]
        carried = [flat[c[1]] if _is_slot(c) else c for c in plan.carried]
        ctx.autocast = _autocast_state()
        ctx.rng = []
        ids = {id(t) for t in flat}
        cs: list[Tensor] = []
        inp = x
        for j, fn in enumerate(plan.fns):
            ctx.rng.append(_rng_state(plan.devices))
            y = fn(inp, *[_arg(item, flat, carried) for item in plan.extras[j]])
            if _is_slot(plan.carried[j]):
                cj = carried[j]
                c = flat[plan.alpha[j]] * cj + y
                if c.shape != cj.shape:
                    raise ValueError(f'carried[{j}]: shape {tuple(cj.shape)} must equal the level output shape '
                                     f'{tuple(c.shape)} with save_memory=True (it is reconstructed from it)')
            else:
                c = y
            # a Function must not return its inputs (or views) as outputs: give c its own storage
            if id(c) in ids or c._base is not None or any(c is o for o in cs):
                c = c.clone()
            cs.append(c)
            inp = c
        ctx.plan = plan
        ctx.carried_meta = [(t.dtype, t.shape) if isinstance(t, Tensor) else None for t in carried]
        ctx.params = {i: flat[i] for i in range(param_start, len(flat))}
        ctx.n_flat = len(flat)
        extra_slots = [v for items in plan.extras for k, v in items if k == 'tensor']
        ctx.extra_slots = {s: i for i, s in enumerate(extra_slots)}
        ctx.save_for_backward(x, *cs, *[flat[a] if a is not None else None for a in plan.alpha],
                              *[flat[s] for s in extra_slots])
        return tuple(cs)

    @staticmethod
    def backward(ctx, *grad_cs: Tensor | None) -> tuple[Tensor | None, ...]:
        plan: _Plan = ctx.plan
        n = len(plan.fns)
        saved = ctx.saved_tensors
        x, cs = saved[0], saved[1:1 + n]
        alphas = saved[1 + n:1 + 2 * n]
        extra_tensors = saved[1 + 2 * n:]
        needs = ctx.needs_input_grad[2:]           # per flat slot (plan and param_start come first)

        g_flat: list[Tensor | None] = [None] * ctx.n_flat
        g_c = list(grad_cs)
        rec: list[Tensor | None] = [None] * n       # reconstructed carried tensors
        # the lowest level that reads carried[k] through a CarriedRef: rec[k] is dropped once it has run
        last_use = {item_k: j for j in reversed(range(n)) for kind, item_k in plan.extras[j] if kind == 'ref'}
        g_carried: list[Tensor | None] = [None] * n
        for j in reversed(range(n)):
            inp = (x if j == 0 else cs[j - 1]).detach()
            inp.requires_grad_(inp.is_floating_point() and (j > 0 or needs[0]))
            leaves: list[tuple[str, int, Tensor]] = []   # (kind, where its gradient goes, leaf)
            if inp.requires_grad:
                leaves.append(('slot', 0, inp) if j == 0 else ('c', j - 1, inp))
            args = []
            for kind, val in plan.extras[j]:
                if kind == 'tensor':
                    t = extra_tensors[ctx.extra_slots[val]].detach()
                    if needs[val] and t.is_floating_point():
                        t.requires_grad_(True)
                        leaves.append(('slot', val, t))
                    args.append(t)
                elif kind == 'ref' and _is_slot(plan.carried[val]):
                    t = rec[val].detach()
                    if needs[plan.carried[val][1]]:
                        t.requires_grad_(True)
                        leaves.append(('carried', val, t))
                    args.append(t)
                else:  # a constant, or a reference to an absent carried term (0 / None as given)
                    args.append(plan.carried[val] if kind == 'ref' else val)
            with _replay(ctx.rng[j], plan.devices, ctx.autocast), torch.enable_grad():
                y = plan.fns[j](inp, *args)
            g, g_c[j] = g_c[j], None
            if _is_slot(plan.carried[j]) and (j in last_use or g is not None):
                slot, aslot, alpha = plan.carried[j][1], plan.alpha[j], alphas[j]
                dtype, shape = ctx.carried_meta[j]
                if j in last_use or needs[aslot]:   # carried_j itself is only needed for these two
                    with torch.no_grad():
                        rec[j] = ((cs[j] - y.detach()) / alpha).to(dtype)
                if g is not None:
                    if needs[aslot]:
                        g_flat[aslot] = _acc(g_flat[aslot], (g * rec[j]).sum_to_size(alpha.shape).to(alpha.dtype))
                    if needs[slot]:
                        g_carried[j] = _acc(g_carried[j], (g * alpha).sum_to_size(shape).to(dtype))
                if j not in last_use:
                    rec[j] = None
            if g is not None and y.requires_grad:
                _backprop_level(ctx, plan.params[j], needs, y, g, leaves, g_flat, g_c, g_carried)
            # free this level's recomputed graph (and reconstructions no lower level reads) before the next level
            del y, leaves, args
            for k, i in last_use.items():
                if i == j:
                    rec[k] = None
        for j, c in enumerate(plan.carried):
            if _is_slot(c):
                g_flat[c[1]] = _acc(g_flat[c[1]], g_carried[j])
        return (None, None, *g_flat)


def _is_slot(v: Any) -> bool:
    return isinstance(v, tuple) and len(v) == 2 and v[0] == 'slot'


def _arg(item: tuple[str, Any], flat: Sequence[Tensor], carried: Sequence[Any]) -> Any:
    kind, val = item
    if kind == 'tensor':
        return flat[val]
    if kind == 'ref':
        return carried[val]
    return val


def _column_reversible(fns, alphas, x, carried, extras) -> list[Tensor]:
    """Flatten the call into (plan, tensors) and run the memory-saving Function."""
    n = len(fns)
    flat: list[Tensor] = [x]
    plan_carried: list[Any] = []
    for c in carried:
        if _absent(c):
            plan_carried.append(c)
        else:
            plan_carried.append(('slot', len(flat)))
            flat.append(c)
    plan_alpha: list[int | None] = []
    for j in range(n):
        if _absent(carried[j]):
            plan_alpha.append(None)
        else:
            plan_alpha.append(len(flat))
            flat.append(alphas[j])
    plan_extras: list[list[tuple[str, Any]]] = []
    for j in range(n):
        items = []
        for item in (extras[j] if extras else ()):
            if isinstance(item, CarriedRef):
                items.append(('ref', item.index))
            elif isinstance(item, Tensor):
                items.append(('tensor', len(flat)))
                flat.append(item)
            else:
                items.append(('const', item))
        plan_extras.append(items)
    # parameters, de-duplicated across levels (a module shared by two levels gets one slot)
    param_slot: dict[int, int] = {}
    params: list[Tensor] = []
    plan_params: list[list[int] | None] = []
    for fn in fns:
        ps = _module_params(fn)
        if ps is None:
            plan_params.append(None)
            continue
        slots = []
        for p in ps:
            if id(p) not in param_slot:
                param_slot[id(p)] = len(flat) + len(params)
                params.append(p)
            slots.append(param_slot[id(p)])
        plan_params.append(slots)
    param_start = len(flat)
    flat.extend(params)
    plan = _Plan(fns=fns, carried=plan_carried, alpha=plan_alpha, extras=plan_extras, params=plan_params,
                 devices=_cuda_devices(flat[:param_start]))
    return list(_ReversibleColumn.apply(plan, param_start, *flat))


def reversible_column(fns: Sequence[Callable[..., Tensor]], alphas: Sequence[Tensor | None], x: Tensor,
                      carried: Sequence[Tensor | int | None], extras: Sequence[Sequence[Any]] = (),
                      save_memory: bool = True) -> list[Tensor]:
    """One reversible column ``c_j = alphas[j]*carried[j] + fns[j](inp_j, *extras[j])`` (paper Eq. 12-17).

    See the module docstring for the encoding of ``carried`` and ``extras``. Alphas are clamped in place first.
    ``save_memory=True`` frees every intermediate activation and recomputes it in backward; it falls back to the
    plain path when no gradient is being recorded (inference), where both are the same function.
    """
    _validate(fns, alphas, x, carried, extras)
    clamp_alphas_([a for a, c in zip(alphas, carried) if not _absent(c)])
    if not save_memory or not torch.is_grad_enabled():
        return _column_plain(fns, alphas, x, carried, extras)
    return _column_reversible(fns, alphas, x, carried, extras)
