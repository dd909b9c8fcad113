"""Checkpoint loading: the authors' key layouts <-> ours, strict, with actionable errors (docs/architecture.md).

The one loader is :func:`load_checkpoint`. Each arch with a published layout registers it through
:func:`register_official_layout`: DeepRFTv2 (the authors' names), ATD (the official ATD names; only the FKE
internals differ) and FKEAttach (a plain base-arch checkpoint; the inserted FKEs stay at initialisation).

A layout mapping is a short table of :class:`RenameRule` s. Each rule pairs a key prefix of ours with the
authors' prefix for the same module, written as templates whose ``{name}`` fields are integer indices
(``{j+1}`` renders index ``j`` one higher, for the authors' 1-based names). The rest of the key after the
prefix is either kept (block internals use the authors' names) or passed through an inner mapping (the FKE's
``FKE_OFFICIAL_RENAMES``). Rules are tried in order, first match wins, and the two directions use the same
table, so the mapping is a bijection by construction (tests check it on every key of both variants).
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from fke_basicsr.io_utils import UserError, atomic_write
from fke_basicsr.registry import close_names

__all__ = ['RenameRule', 'KeyMapping', 'CheckpointMismatchError', 'official_mapping', 'register_official_layout',
           'to_official', 'from_official', 'detect_layout', 'load_checkpoint', 'save_state_dict_atomic',
           'safe_load', 'UnsafeCheckpointError', 'CorruptCheckpointError']

_FIELD = re.compile(r'\{(\w+)([+-]\d+)?\}')


class _Template:
    """A dotted key prefix with integer fields, e.g. ``'subnets_max.{i}.level{j}.fusion.down.0.body.0'``."""

    def __init__(self, text: str):
        self.text = text
        self.fields: list[tuple[str, int]] = []
        pattern, pos = '^', 0
        for m in _FIELD.finditer(text):
            pattern += re.escape(text[pos:m.start()]) + r'(\d+)'
            self.fields.append((m.group(1), int(m.group(2) or 0)))
            pos = m.end()
        # The prefix must end at a key-component boundary: 'alpha{j}' must not swallow 'alpha_x'.
        self.regex = re.compile(pattern + re.escape(text[pos:]) + r'(?=\.|$)')

    def match(self, key: str) -> tuple[dict[str, int], str] | None:
        """Field values (offsets removed) and the rest of the key (``''`` or starting with '.'), or None."""
        m = self.regex.match(key)
        if m is None:
            return None
        values: dict[str, int] = {}
        for (name, offset), raw in zip(self.fields, m.groups()):
            value = int(raw) - offset
            if value < 0 or values.setdefault(name, value) != value:
                return None
        return values, key[m.end():]

    def render(self, values: Mapping[str, int]) -> str:
        return _FIELD.sub(lambda m: str(values[m.group(1)] + int(m.group(2) or 0)), self.text)


@dataclass(frozen=True)
class RenameRule:
    """One module: our key prefix, the authors' prefix, and an optional mapping for the rest of the key."""
    ours: str
    official: str
    inner: 'KeyMapping | None' = None


@dataclass
class KeyMapping:
    """An ordered table of rename rules; ``strict`` mappings refuse keys no rule covers."""
    rules: Sequence[RenameRule]
    official_prefix: str = ''
    strict: bool = True
    _compiled: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        self._compiled = [(_Template(r.ours), _Template(r.official), r.inner) for r in self.rules]

    def _convert(self, key: str, to_official: bool) -> str:
        for ours, official, inner in self._compiled:
            src, dst = (ours, official) if to_official else (official, ours)
            hit = src.match(key)
            if hit is None:
                continue
            values, rest = hit
            if inner is not None and rest:
                rest = '.' + inner._convert(rest[1:], to_official)
            return dst.render(values) + rest
        if self.strict:
            side = 'our' if to_official else "the authors'"
            raise KeyError(f"no rename rule covers {side} key '{key}'")
        return key

    def to_official(self, key: str) -> str:
        """Our key -> the authors' key (with the layout's global prefix)."""
        return self.official_prefix + self._convert(key, True)

    def from_official(self, key: str) -> str:
        """The authors' key (with or without the global prefix) -> ours."""
        if self.official_prefix and key.startswith(self.official_prefix):
            key = key[len(self.official_prefix):]
        return self._convert(key, False)

    def is_official(self, keys: Iterable[str]) -> bool:
        """True when the keys look like the authors' layout: they all carry the global prefix, or (a layout
        without one) at least one of them is renamed on the way in."""
        keys = list(keys)
        if not keys:
            return False
        if self.official_prefix:
            return all(k.startswith(self.official_prefix) for k in keys)
        for k in keys:
            try:
                if self.from_official(k) != k:
                    return True
            except KeyError:
                continue
        return False


def as_key_mapping(renames: Any, strict: bool = False) -> KeyMapping:
    """A KeyMapping from a KeyMapping, a dict, or pairs of (our prefix, official prefix) templates."""
    if isinstance(renames, KeyMapping):
        return renames
    pairs = renames.items() if isinstance(renames, Mapping) else renames
    return KeyMapping([RenameRule(o.rstrip('.'), a.rstrip('.')) for o, a in pairs], strict=strict)


# ----------------------------------------------------------------------------------------------------------
# DeepRFTv2 (docs/architecture.md). Block internals (conv1..5, sca.1, norm*, attn.*, ...) keep the authors' names.

def _deeprftv2_mapping() -> KeyMapping:
    from fke_basicsr.archs.fke import FKE_OFFICIAL_RENAMES
    fke = as_key_mapping(FKE_OFFICIAL_RENAMES)
    rules = [
        RenameRule('embed_max.{i}', 'patch_embed_maxs.{i}.proj'),
        RenameRule('embed_mid.{i}', 'patch_embed_mids.{i}.proj'),
        RenameRule('feedback_max.{i}', 'patch_embed_maxs2.{i}'),
        RenameRule('feedback_mid.{i}', 'patch_embed_mids2.{i}'),
        RenameRule('max_to_mid.{i}.{j}', 'down_max{j+1}.{i}.body.0'),
        RenameRule('latent_fuse.{i}.down', 'down_mid2max.{i}.body.0'),
        RenameRule('latent_fuse.{i}.fuse', 'fusd_max_2.{i}'),
        RenameRule('head_max.{i}', 'output_maxs.{i}'),
        RenameRule('head_mid.{i}', 'output_mids.{i}'),
        RenameRule('fke_max.{i}', 'kernel_estimator.{i}', fke),
        RenameRule('fke_mid.{i}', 'mid_kernel_estimator.{i}', fke),
    ]
    for ours, theirs in (('encoders_max', 'subnets_max'), ('encoders_mid', 'subnets_mid'),
                         ('decoders_max', 'subdenets_max'), ('decoders_mid', 'subdenets_mid')):
        rules += [
            RenameRule(f'{ours}.{{i}}.alphas.{{j}}', f'{theirs}.{{i}}.alpha{{j}}'),
            RenameRule(f'{ours}.{{i}}.levels.{{j}}.down', f'{theirs}.{{i}}.level{{j}}.fusion.down.0.body.0'),
            RenameRule(f'{ours}.{{i}}.levels.{{j}}.fuse', f'{theirs}.{{i}}.level{{j}}.fusion.concat_conv.0'),
            RenameRule(f'{ours}.{{i}}.levels.{{j}}.up.conv', f'{theirs}.{{i}}.level{{j}}.fusion.up.0.body.0'),
            RenameRule(f'{ours}.{{i}}.levels.{{j}}.blocks', f'{theirs}.{{i}}.level{{j}}.blocks'),
        ]
    return KeyMapping(rules, official_prefix='global_model.')


def _deeprftv2_variant(keys: Iterable[str]) -> str | None:
    """'B' when NAFEVSBlock-only keys (norm_mamba, lamb_g) occur in the U-Net, 'S' when NAF blocks only."""
    keys = list(keys)
    if not any('blocks.' in k for k in keys):
        return None
    return 'B' if any(k.endswith(('norm_mamba.weight', '.lamb_g')) for k in keys) else 'S'


# ----------------------------------------------------------------------------------------------------------
# ATD(-light)(+FKE): every key is the official ATD one except the FKE internals (ker_ests.{i}.<FKE key>).

def _atd_mapping() -> KeyMapping:
    from fke_basicsr.archs.fke import FKE_OFFICIAL_RENAMES
    return KeyMapping([RenameRule('ker_ests.{i}', 'ker_ests.{i}', as_key_mapping(FKE_OFFICIAL_RENAMES))],
                      strict=False)


def _atd_left_at_init(key: str) -> bool:
    """ATD-light weights (no FKE) into ATD-light+FKE: the FKE chain stays at its initialisation."""
    return key.startswith('ker_ests.')


# ----------------------------------------------------------------------------------------------------------
# FKEAttach: the "official" layout is the plain base arch's; ours wraps each attach point as
# base.<point>.inner (the module) + base.<point>.fke (the FKE, which a base checkpoint lacks).

def _fke_attach_mapping(model: torch.nn.Module) -> KeyMapping:
    rules = [RenameRule(f'base.{p}.inner', p) for p in model.attach_points]
    tops = {k.split('.', 1)[0] for k in model.base.state_dict()} | {n for n, _ in model.base.named_children()}
    rules += [RenameRule(f'base.{t}', t) for t in sorted(tops, key=len, reverse=True)]
    return KeyMapping(rules, strict=False)


def _fke_attach_left_at_init(key: str) -> bool:
    return '.fke.' in key


_LAYOUTS: dict[str, dict[str, Any]] = {}
_CACHE: dict[str, KeyMapping] = {}


def register_official_layout(arch: str, mapping_factory, variant_fn=None, left_at_init=None,
                             per_model: bool = False) -> None:
    """Plug an arch's official key layout into load_checkpoint / to_official / from_official.

    ``mapping_factory()`` builds its :class:`KeyMapping` (``mapping_factory(model)`` when ``per_model``: the
    layout depends on the instance). ``variant_fn(keys)`` names the variant a key set belongs to (for the
    mismatch report). ``left_at_init(key)`` marks model keys a checkpoint may lack: they stay at their
    initialisation and are listed in the result's ``missing_keys`` (e.g. FKE keys for plain base weights).
    """
    _LAYOUTS[arch] = {'mapping': mapping_factory, 'variant': variant_fn, 'left_at_init': left_at_init,
                      'per_model': per_model}
    _CACHE.pop(arch, None)


register_official_layout('DeepRFTv2', _deeprftv2_mapping, _deeprftv2_variant)
register_official_layout('ATD', _atd_mapping, left_at_init=_atd_left_at_init)
register_official_layout('FKEAttach', _fke_attach_mapping, left_at_init=_fke_attach_left_at_init, per_model=True)


def official_mapping(arch: str = 'DeepRFTv2', model: torch.nn.Module | None = None) -> KeyMapping:
    """The KeyMapping between our keys and the authors' for ``arch`` (``model``: for per-model layouts)."""
    if arch not in _LAYOUTS:
        raise ValueError(f"arch '{arch}' has no official checkpoint layout; known: {sorted(_LAYOUTS)}")
    entry = _LAYOUTS[arch]
    if entry['per_model']:
        if model is None:
            raise ValueError(f"arch '{arch}': its key layout depends on the instance; pass the model")
        return entry['mapping'](model)
    if arch not in _CACHE:
        _CACHE[arch] = entry['mapping']()
    return _CACHE[arch]


def to_official(state_dict: Mapping[str, Any], arch: str = 'DeepRFTv2', model: torch.nn.Module | None = None) -> dict:
    """Our state dict -> the authors' layout (same tensors, renamed keys)."""
    m = official_mapping(arch, model)
    return {m.to_official(k): v for k, v in state_dict.items()}


def from_official(state_dict: Mapping[str, Any], arch: str = 'DeepRFTv2',
                  model: torch.nn.Module | None = None) -> dict:
    """The authors' state dict -> our layout (same tensors, renamed keys)."""
    m = official_mapping(arch, model)
    out: dict = {}
    for k, v in state_dict.items():
        try:
            out[m.from_official(k)] = v
        except KeyError:
            out[k] = v  # left as is: reported as an unknown key by load_checkpoint
    return out


# ----------------------------------------------------------------------------------------------------------
# Loading

class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint does not fit the model; the message says what differs and what to change."""


def _strip_module(sd: Mapping[str, Any]) -> dict:
    """Remove DistributedDataParallel's 'module.' prefix when every key has it."""
    if sd and all(k.startswith('module.') for k in sd):
        return {k[len('module.'):]: v for k, v in sd.items()}
    return dict(sd)


def _select_params(obj: Any, param_key: str | None) -> dict:
    """The state dict inside a checkpoint object: BasicSR's {'params': ...}, {'params_ema': ...}, or bare."""
    if not isinstance(obj, Mapping):
        raise TypeError(f'checkpoint must be a dict (state dict or BasicSR checkpoint), got {type(obj).__name__}')
    if param_key is not None:
        if param_key not in obj:
            raise KeyError(f"param_key '{param_key}' not in checkpoint; its top-level keys are "
                           f'{sorted(obj)[:10]}. Use param_key=None to pick one automatically.')
        return obj[param_key]
    for key in ('params', 'params_ema', 'state_dict', 'model'):
        if key in obj and isinstance(obj[key], Mapping):
            return obj[key]
    return dict(obj)


def detect_layout(keys: Iterable[str], arch: str = 'DeepRFTv2', model: torch.nn.Module | None = None) -> str:
    """'official' when the keys are in the authors' layout of ``arch``, else 'ours'."""
    if arch in _LAYOUTS and official_mapping(arch, model).is_official(keys):
        return 'official'
    return 'ours'


def _arch_name(model: torch.nn.Module) -> str:
    return getattr(model, 'official_layout', type(model).__name__)


def _mismatch_report(arch: str, model_sd: Mapping[str, torch.Tensor], sd: Mapping[str, Any], layout: str,
                     model: torch.nn.Module | None = None) -> str:
    expected, given = set(model_sd), set(sd)
    unknown = sorted(given - expected)
    missing = sorted(expected - given)
    shapes = sorted(k for k in given & expected
                    if hasattr(sd[k], 'shape') and tuple(sd[k].shape) != tuple(model_sd[k].shape))
    lines = [f'checkpoint ({layout} layout) does not match {arch}: {len(unknown)} unknown, '
             f'{len(missing)} missing, {len(shapes)} shape-mismatched keys.']
    variant_fn = _LAYOUTS.get(arch, {}).get('variant')
    if variant_fn is not None:
        have, want = variant_fn(given), variant_fn(expected)
        if have and want and have != want:
            lines.append(f'The checkpoint is a {arch}-{have} checkpoint but the model is {arch}-{want}: '
                         f'build the network with `variant: {have}` (or load a -{want} checkpoint).')
    expected_sorted = sorted(expected)
    if unknown:
        lines.append('unknown keys (first 5, with the nearest expected names):')
        for k in unknown[:5]:
            # the missing keys are the likeliest counterparts (a renamed key); then any expected key
            near = close_names(k, missing, n=2, cutoff=0.6) or close_names(k, expected_sorted, n=2, cutoff=0.6)
            origin = ''
            if layout == 'official':
                try:  # show the name as it is in the file too
                    origin = f' (in the file: {official_mapping(arch, model).to_official(k)})'
                except KeyError:
                    pass
            lines.append(f"  {k}{origin}  ->  nearest: {', '.join(near) if near else '(none)'}")
    if missing:
        lines.append(f"missing keys (first 5): {', '.join(missing[:5])}")
    if shapes:
        lines.append('shape mismatches (first 5):')
        lines += [f'  {k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(model_sd[k].shape)}'
                  for k in shapes[:5]]
    if unknown or missing or shapes:
        lines.append('Check the network options (variant, width, enc_blocks/dec_blocks, num_columns, fke) '
                     'against the ones the checkpoint was trained with, or pass strict=False to load the overlap.')
    return '\n'.join(lines)


class UnsafeCheckpointError(UserError):
    """The file holds pickled Python objects beyond tensors and plain containers: loading it could run code."""


class CorruptCheckpointError(UserError):
    """The file is not a readable torch checkpoint (truncated by a killed write, or not a checkpoint at all)."""


def safe_load(path: str | os.PathLike, what: str = 'checkpoint', map_location: Any = 'cpu') -> Any:
    """``torch.load`` with ``weights_only=True``: tensors, numbers, strings and containers only, never code.

    torch's allow-list (tensors, dict/list/tuple/set, OrderedDict, Counter, numbers, strings, torch dtypes and
    devices) is exactly what a BasicSR checkpoint or training state holds (optimiser and scheduler state
    dicts, RNG states as tensors/ints, the GradScaler's floats). Anything else raises
    :class:`UnsafeCheckpointError` naming the file and the refused object, before that object is created.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{what} file not found: {path}')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if re.search(r'unsupported GLOBAL|Unsupported global|GLOBAL [\w.]+ was not an allowed', text):
            m = re.search(r'(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)', text)
            refused = f' ({m.group(1)})' if m else ''
            raise UnsafeCheckpointError(
                f'{what} {path} contains Python objects{refused} that loading would execute; it was refused and '
                'nothing from it ran. Use a checkpoint that holds only tensors (BasicSR\'s {"params": ...} '
                'files and our training states do), or re-save a trusted one as a state dict.') from None
        raise CorruptCheckpointError(f'{what} {path} is not a readable torch checkpoint (not a pickle torch can '
                                     'read); it may be truncated by a killed write or another kind of file: use an '
                                     'intact copy.') from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        first = first.split('. ')[0]
        raise CorruptCheckpointError(f'{what} {path} is not a readable torch checkpoint ({first}); it may be '
                                     'truncated by a killed write: use an intact copy.') from None


def load_checkpoint(model: torch.nn.Module, path_or_state: str | os.PathLike | Mapping[str, Any],
                    strict: bool = True, param_key: str | None = None):
    """Load ours / the authors' / DDP-prefixed weights into ``model``; raise CheckpointMismatchError if unfit.

    ``param_key``: 'params', 'params_ema', or None to pick automatically ('params', then 'params_ema',
    'state_dict', 'model', else the object itself). With ``strict=False`` unknown and missing keys are
    tolerated (returned like ``load_state_dict``'s result); shape mismatches always raise. Model keys the
    arch's layout marks as left at initialisation (ATD's FKE chain for ATD-light weights, FKEAttach's FKEs for
    base weights) may be absent even when strict; they are listed in the result's ``missing_keys``.
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        obj = safe_load(path_or_state)
    else:
        obj = path_or_state
    sd = _strip_module(_select_params(obj, param_key))
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    arch = _arch_name(model)
    layout = detect_layout(sd, arch, model)
    if layout == 'official':
        sd = from_official(sd, arch, model)
    model_sd = model.state_dict()
    given, expected = set(sd), set(model_sd)
    bad_shape = any(hasattr(sd[k], 'shape') and tuple(sd[k].shape) != tuple(model_sd[k].shape)
                    for k in given & expected)
    optional = _LAYOUTS.get(arch, {}).get('left_at_init')
    required = {k for k in expected if optional is None or not optional(k)}
    if given & (expected - required):
        required = expected  # a checkpoint that has some of the optional keys must have them all
    if bad_shape or (strict and (given - expected or required - given)):
        raise CheckpointMismatchError(_mismatch_report(arch, model_sd, sd, layout, model))
    if strict and expected - given:
        return model.load_state_dict(sd, strict=False)  # only keys left at initialisation are missing
    return model.load_state_dict(sd, strict=strict)


def save_state_dict_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside ``path``, then os.replace: never a torn file; the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(obj, f))


def check_loadable(path: str | os.PathLike, what: str = 'checkpoint') -> None:
    """Refuse an unsafe or unreadable file early and cheaply (memory-mapped weights-only load, nothing kept)."""
    import zipfile
    path = Path(path)
    if zipfile.is_zipfile(path):
        try:
            torch.load(path, map_location='cpu', weights_only=True, mmap=True)
            return
        except pickle.UnpicklingError:
            pass  # safe_load words the refusal
        except (RuntimeError, EOFError, OSError, ValueError):
            pass
    safe_load(path, what=what)
