"""FKEAttach: insert Fourier Kernel Estimators into any arch registered in BasicSR (paper §3.1, Table 5).

The base arch is built from its own options; each submodule named in ``at`` (module paths or glob patterns)
is replaced by a thin wrapper that runs the original module, then an FKE on its output (C→C), and returns the
result in the module's own layout. Outputs may be feature maps (B, C, H, W) or tokens (B, H·W, C) when the
module receives its spatial size as an argument (SwinIR's ``layer(x, x_size)``). Consecutive FKEs form a chain
of columns: each passes its column state to the next (as ATD-light+FKE), through a per-forward holder object.

Base-arch checkpoints load as they are through :func:`fke_basicsr.checkpoints.load_checkpoint`: the plain base
layout maps onto the wrapped modules and the FKE keys stay at initialisation (listed as missing keys).
"""
from __future__ import annotations

import fnmatch
from typing import Any, Mapping, Sequence

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import Tensor, nn

from fke_basicsr.archs.fke import FourierKernelEstimator
from fke_basicsr.registry import close_names, did_you_mean, register

__all__ = ['FKEAttach', 'AttachedFKE', 'AttachOptions', 'default_attach_points', 'expose_base_options']

_IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'inp_channels', 'in_channels', 'in_nc')
_WRAPPED = '.inner.'


class _Chain:
    """Holds the FKE column state during one forward pass of FKEAttach (reset at every call)."""

    def __init__(self) -> None:
        self.state: tuple[Tensor, ...] | None = None


def _spatial_size(args: Sequence[Any], kwargs: Mapping[str, Any], length: int) -> tuple[int, int] | None:
    """Find (H, W) with H·W == length among a module's arguments (e.g. SwinIR's x_size)."""
    for value in list(args) + list(kwargs.values()):
        value = getattr(value, 'size', value)  # geometry objects carrying .size = (H, W) (our ATD)
        if isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
                isinstance(v, int) for v in value) and value[0] * value[1] == length:
            return int(value[0]), int(value[1])
    return None


class AttachedFKE(nn.Module):
    """A submodule followed by an FKE on its output, in the submodule's own output layout (paper §3.1)."""

    def __init__(self, inner: nn.Module, fke: FourierKernelEstimator, chain: _Chain, tokens: bool):
        super().__init__()
        self.inner = inner
        self.fke = fke
        self.tokens = tokens
        self._chain = chain

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        if self.tokens:
            b, length, c = out.shape
            size = _spatial_size(args[1:], kwargs, length)
            if size is None:
                raise ValueError(f'{type(self.inner).__name__} returned {length} tokens but no (H, W) argument '
                                 f'with H·W = {length} was passed to it')
            fmap = out.transpose(1, 2).reshape(b, c, *size)
        else:
            fmap = out
        result = self.fke(fmap, state=self._chain.state)
        self._chain.state = result.state
        feature = result.feature
        return feature.flatten(2).transpose(1, 2) if self.tokens else feature


def default_attach_points(base: nn.Module) -> list[str]:
    """The documented tail of common archs: the last block of ``body`` (EDSR, RCAN, RRDBNet, MSRResNet) or of
    ``layers`` (SwinIR, ATD); any other arch names its points with ``at:``."""
    for attr in ('body', 'layers'):
        container = getattr(base, attr, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container) > 0:
            return [f'{attr}.{len(container) - 1}']
    raise ValueError(f'{type(base).__name__} has no documented default attach point: name the modules with '
                     '`at:` (module paths from `named_modules()`, glob patterns allowed).')


class AttachOptions(dict):
    """An FKEAttach ``network_g`` mapping that answers reads of keys it lacks with the base arch's options.

    BasicSR's model classes read network options directly (SwinIRModel pads to ``opt['network_g']
    ['window_size']``, StyleGAN2Model reads ``num_style_feat``); with FKEAttach those keys sit under ``base:``.
    Iteration, ``**`` unpacking and ``in`` still see only the mapping's own keys, so building the network is
    unchanged.
    """

    def __missing__(self, key: str) -> Any:
        base = dict.get(self, 'base')
        if key != 'type' and isinstance(base, Mapping) and key in base:
            return base[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default


def expose_base_options(opt: dict) -> dict:
    """Make ``network_g`` / ``network_d`` of type FKEAttach an :class:`AttachOptions` (done when options load)."""
    for key in ('network_g', 'network_d'):
        net = opt.get(key)
        if isinstance(net, Mapping) and net.get('type') == 'FKEAttach' and not isinstance(net, AttachOptions):
            opt[key] = AttachOptions(net)
    return opt


def _base_size_multiple(base: nn.Module, base_opt: Mapping[str, Any]) -> int:
    """The input-size multiple a wrapped arch needs: its ``size_multiple``, else its attention ``window_size``
    (attribute or option; SwinIR pads nothing itself), else 1 (the FKEs pad odd sizes themselves)."""
    for value in (getattr(base, 'size_multiple', None), getattr(base, 'window_size', None),
                  base_opt.get('window_size')):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 1


@register(ARCH_REGISTRY)
class FKEAttach(nn.Module):
    """Any registered arch with FKEs inserted after named submodules (docs/architecture.md, FKEAttach).

    Args:
        base: options of the base arch, ``{type: <registered arch>, **its kwargs}``.
        at: module paths or glob patterns (``body.15``, ``layers.*``); default: the arch's documented tail.
        fke: FourierKernelEstimator options (``width`` 48, ``levels`` 4, ``block``, ``window``, …); the FKE keeps
            the module's channel count C (in_channels = C) and pads odd sizes (pad_to_even) by default.
        freeze_base: train only the FKEs (base parameters get ``requires_grad=False``).
        probe_size: spatial size of the dummy input used once at build time to find each module's output layout.
    """

    def __init__(self, base: Mapping[str, Any], at: str | Sequence[str] | None = None,
                 fke: Mapping[str, Any] | None = None, freeze_base: bool = False, probe_size: int = 32):
        super().__init__()
        if not isinstance(base, Mapping) or 'type' not in base:
            raise ValueError('base: give the base arch as a mapping with its registered `type` and its options, '
                             'e.g. {type: EDSR, num_feat: 64, ...}')
        base_opt = dict(base)
        base_type = base_opt.pop('type')
        if base_type not in ARCH_REGISTRY:
            raise ValueError(f"base.type '{base_type}' is not a registered arch."
                             f"{did_you_mean(base_type, ARCH_REGISTRY.keys())}")
        self.base = ARCH_REGISTRY.get(base_type)(**base_opt)
        self.base_type = base_type
        in_channels = next((base_opt[k] for k in _IN_CHANNEL_KEYS if k in base_opt), 3)
        fke_opt = {'width': 48, 'levels': 4, 'pad_to_even': True, **dict(fke or {})}
        for reserved in ('in_channels', 'first_column'):
            if reserved in fke_opt:
                raise ValueError(f'fke.{reserved} is set by FKEAttach (from the module output / the chain order)')

        patterns = [at] if isinstance(at, str) else list(at or default_attach_points(self.base))
        layouts = self._probe(in_channels, probe_size, _base_size_multiple(self.base, base_opt))
        targets = self._resolve(patterns, layouts)
        self._chain = _Chain()
        self.attach_points = targets
        self.fke_params = []
        for index, path in enumerate(targets):
            kind, channels = layouts[path]
            fke_module = FourierKernelEstimator(in_channels=channels, first_column=index == 0, **fke_opt)
            parent_path, _, name = path.rpartition('.')
            parent = self.base.get_submodule(parent_path) if parent_path else self.base
            setattr(parent, name, AttachedFKE(getattr(parent, name), fke_module, self._chain, kind == 'tokens'))
            self.fke_params.append(sum(p.numel() for p in fke_module.parameters()))
        self.freeze_base = bool(freeze_base)
        if self.freeze_base:
            for pname, param in self.named_parameters():
                if '.fke.' not in f'.{pname}':
                    param.requires_grad_(False)
        # what a model reads from the network: the size multiple (RestorationModel pads validation images to it)
        self.size_multiple = _base_size_multiple(self.base, base_opt)
        for attr in ('upscale', 'window_size'):
            if hasattr(self.base, attr):
                setattr(self, attr, getattr(self.base, attr))

    # ------------------------------------------------------------------------------------------ build time
    def _probe(self, in_channels: int, size: int, multiple: int) -> dict[str, tuple[str, int]]:
        """Run one dummy forward with temporary hooks; record which modules output feature maps or tokens."""
        size = -(-size // multiple) * multiple
        layouts: dict[str, tuple[str, int]] = {}
        hooks = []

        def record(path):
            def hook(module, args, kwargs, out):
                if not isinstance(out, Tensor) or path in layouts:
                    return
                if out.dim() == 4:
                    layouts[path] = ('map', out.shape[1])
                elif out.dim() == 3 and _spatial_size(args[1:], kwargs, out.shape[1]) is not None:
                    layouts[path] = ('tokens', out.shape[2])
            return hook

        for path, module in self.base.named_modules():
            if path:
                hooks.append(module.register_forward_hook(record(path), with_kwargs=True))
        was_training = self.base.training
        try:
            self.base.eval()
            with torch.no_grad():
                self.base(torch.zeros(1, in_channels, size, size))
        finally:
            for h in hooks:
                h.remove()
            self.base.train(was_training)
        return layouts

    def _resolve(self, patterns: Sequence[str], layouts: Mapping[str, tuple[str, int]]) -> list[str]:
        names = [n for n, _ in self.base.named_modules() if n]
        targets: list[str] = []
        for pattern in patterns:
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            # '*' also matches dots: keep the outermost modules a pattern names (body.* → body.0, not body.0.conv1)
            matched = [n for n in matched if not any(n.startswith(m + '.') for m in matched)]
            if not matched:
                near = close_names(pattern, layouts, n=6, cutoff=0.4)
                raise ValueError(f"at: '{pattern}' matches no module of {self.base_type}. Nearest modules with a "
                                 f"feature-map output: {', '.join(near) or ', '.join(list(layouts)[-6:])}")
            for name in matched:
                if name not in layouts:
                    near = close_names(name, layouts, n=6, cutoff=0.4)
                    raise ValueError(f"at: module '{name}' of {self.base_type} does not output a feature map "
                                     f"(B, C, H, W) or tokens with a known (H, W). Nearest valid modules: "
                                     f"{', '.join(near) or ', '.join(list(layouts)[-6:])}")
                if name not in targets:
                    targets.append(name)
        # a module nested inside another target would run its FKE inside the outer one: keep them disjoint
        for a in targets:
            for b in targets:
                if a != b and b.startswith(a + '.'):
                    raise ValueError(f"at: '{b}' lies inside '{a}'; attach to one of them")
        return targets

    # ------------------------------------------------------------------------------------------- run time
    def forward(self, *args, **kwargs):
        self._chain.state = None
        try:
            return self.base(*args, **kwargs)
        finally:
            self._chain.state = None

    # -------------------------------------------------------------------------------------- checkpoints
    # A plain base-arch checkpoint loads through fke_basicsr.checkpoints.load_checkpoint (layout 'FKEAttach':
    # base.<point>.inner <-> <point>, the FKEs stay at initialisation and are listed as missing).

    def extra_repr(self) -> str:
        per = ', '.join(f'{p}: {n:,}' for p, n in zip(self.attach_points, self.fke_params))
        return f'base={self.base_type}, freeze_base={self.freeze_base}, FKE parameters per point: {per}'
