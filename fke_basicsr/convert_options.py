"""Bring your own options: the DeepRFTv2 authors' and ATD's option files, converted to ours (docs/migrating.md).

``python basicsr/train.py -opt <their file>`` and ``basicsr/test.py`` recognise such a file, convert it in
memory, print the mapping report and write the converted YAML beside the run (``experiments/<name>/`` or
``results/<name>/``). The same conversion as a command::

    python -m fke_basicsr.convert_options their.yml -o ours.yml [--world-size 8]

Every key of the input is *mapped* (renamed or translated), *kept* (same key, same meaning), *dropped* (with
the reason: e.g. an option of a code path the authors' released configurations never enable) or *refused*
(a value whose behaviour we do not implement; a clear message, exit code 2). Nothing is silently ignored.
What each key becomes is listed in docs/migrating.md.
"""
from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import yaml

from fke_basicsr.options import OptionsError, load_yaml

__all__ = ['ConversionError', 'Report', 'detect', 'convert', 'prepare_argv', 'main']

AUTHORS_DEBLUR, AUTHORS_SR, ATD_OWN = 'DeepRFTv2 authors (deblurring)', 'DeepRFTv2 authors (ATD SR)', 'ATD'
AUTHORS_MODELS = ('ImageCleanModel', 'ImageCleanModel_infernece', 'ImageCleanModel_inference',
                  'ImagePadCleanModel')
# Network keys only the authors' DeepRFTv2 constructor has (any one of them identifies their file).
AUTHORS_DEEPRFT_MARKS = ('dims', 'num_global_unet', 'baseblock_enc_max_global', 'enc_max_layers', 'deblur_kernel')
AUTHORS_ATD_MARKS = ('FKE', 'ker_size', 'FKE_last', 'baseblock_enc_ker', 'save_memorys')


class ConversionError(OptionsError):
    """A key of a foreign options file whose value has no equivalent here; the message says what to change."""


@dataclass
class Report:
    """What happened to every input key: (dotted key, action, detail); action in mapped/kept/dropped/added."""
    source: str = 'options'
    kind: str = ''
    entries: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, key: str, action: str, detail: str = '') -> None:
        self.entries.append((key, action, detail))

    def covers(self, key: str) -> bool:
        """True when ``key`` or one of its parent sections has an entry."""
        parts = key.split('.')
        recorded = {k for k, a, _ in self.entries if a != 'added'}
        return any('.'.join(parts[:i]) in recorded for i in range(1, len(parts) + 1))

    def text(self) -> str:
        lines = [f'Converted {self.source} ({self.kind} options) to fke_basicsr options:']
        width = max((len(k) for k, _, _ in self.entries), default=10)
        for key, action, detail in self.entries:
            lines.append(f'  {action:<7} {key:<{width}}  {detail}'.rstrip())
        return '\n'.join(lines)


def leaf_keys(opt: Mapping, prefix: str = '') -> Iterator[str]:
    """Dotted paths of every leaf of a nested mapping (lists are leaves)."""
    for k, v in opt.items():
        path = f'{prefix}{k}'
        if isinstance(v, Mapping) and v:
            yield from leaf_keys(v, path + '.')
        else:
            yield path


def detect(opt: Mapping) -> str | None:
    """Which foreign layout an options dict is in, or None for a file of ours / of plain BasicSR."""
    net = opt.get('network_g') if isinstance(opt.get('network_g'), Mapping) else {}
    model = opt.get('model_type')
    if net.get('type') == 'DeepRFTv2' and any(k in net for k in AUTHORS_DEEPRFT_MARKS):
        return AUTHORS_DEBLUR
    if net.get('type') == 'ATD' and (model in AUTHORS_MODELS or any(k in net for k in AUTHORS_ATD_MARKS)):
        return AUTHORS_SR
    if model in AUTHORS_MODELS:
        return AUTHORS_DEBLUR if net.get('type') == 'DeepRFTv2' else AUTHORS_SR
    if model == 'ATDModel' or (net.get('type') == 'ATD' and 'dim_ffn_td' in net):
        return ATD_OWN
    return None


# ----------------------------------------------------------------------------------------------------------------
# Rules. FIXED: a value the released configurations always use (anything else refused); DEAD: dropped whatever
# the value, with the reason.
# ----------------------------------------------------------------------------------------------------------------
_OFF = 'an option of a code path the authors\' released configurations never enable'
DEEPRFT_FIXED: dict[str, tuple[Any, str]] = {
    'up2scale': (False, 'no up-scaling branch'),
    'frozen_encoder': (False, 'nothing is frozen'), 'frozen_global': (False, 'nothing is frozen'),
    'frozen_kernel': (False, 'nothing is frozen'),
    'num_kernel_est': (0, 'no extra kernel-estimator branch'), 'num_local_unet': (0, 'no local UNet'),
    'num_local_decoder': (0, 'no local decoder'),
    'deblur_mask': (False, 'no mask branch in the FKE'), 'latent_sharp': (True, 'a head image before each FKE'),
    'inp_feature': ('feature', 'both FKE input projections take the decoder feature'),
    'deconv_feature': ('feature', 'both FKE input projections take the decoder feature'),
    'norm_type': ('LayerNorm', 'LayerNorm2d before the FKE\'s transfer-function head'),
    'spatial_add': (False, 'no spatial sub-decoder in the FKE'), 'spatial_decoder': (False, 'no spatial sub-decoder'),
    'ks': ([0, 0, 0], 'the FKE\'s replicate padding is off'),
    'downsample': ('concat', 'the mid encoder fuses max-scale features by concat + 1x1 conv'),
    'downsample_mode': ('conv', '2x2 stride-2 convolutions'),
    'upsample_mode': ('conv1x1_shuffle', '1x1 conv + PixelShuffle'),
    'fuse_downsample_mode': ('conv', '2x2 stride-2 convolutions'),
    'fuse_method_encoder': ('Fuse_in_Encoder', 'max-scale levels injected into the mid encoder'),
    'fuse_method_decoder': ('DownSample2latent', 'the mid FKE feature fused into the max latent'),
    'small_scale': (False, 'two scales (max, mid)'), 'small_enc': (False, 'two scales (max, mid)'),
    'mid_flip': (False, 'no flipped mid scale'), 'multiscale_enc': (False, 'no multi-scale encoder input'),
    'drop_path': (0, 'no stochastic depth'), 'prior_model': (None, 'no prior network'),
}
DEEPRFT_DEAD: dict[str, str] = {
    'pad_size': 'stored but never used by the forward pass (the FKE gets ks[0] = 0)',
    'num_ker': 'not used by the live path (the FKE width is dims_ker)',
    'kernel_size': _OFF, 'downsample_ker': _OFF, 'downsample_local': _OFF, 'fuse_upsample_mode': _OFF,
    'enc_local_layers': _OFF + ' (num_local_unet: 0)', 'dec_local_layers': _OFF + ' (num_local_unet: 0)',
    'sub_dec_width': _OFF, 'num_heads_enc': _OFF, 'num_heads_dec': _OFF,
    'baseblock_enc_local': _OFF + ' (num_local_unet: 0)', 'baseblock_dec_local': _OFF + ' (num_local_unet: 0)',
    'baseblock_enc_small_global': _OFF + ' (small_scale: false)',
    'baseblock_dec_small_global': _OFF + ' (small_scale: false)',
    'baseblock_enc_small_local': _OFF, 'baseblock_dec_small_local': _OFF, 'baseblock_enc_mid_local': _OFF,
    'baseblock_dec_mid_local': _OFF, 'baseblock_enc_max_local': _OFF, 'baseblock_dec_max_local': _OFF,
    'baseblock_dec_ker': _OFF + ' (spatial_decoder: false)', 'dec_ker_layers': _OFF + ' (spatial_decoder: false)',
    'enc_small_layers': _OFF + ' (small_scale: false)', 'dec_small_layers': _OFF + ' (small_scale: false)',
    'enc_light_layers': _OFF, 'save_memory_local_encoder': _OFF, 'save_memory_local_decoder': _OFF,
    'save_memory_local_ker': _OFF,
    'save_memory': 'the top-level flag is unused; the per-column save_memory_* lists are what count',
    'get_ker': 'kernel-visualisation outputs only; the prediction is unchanged',
}
ATD_FIXED: dict[str, tuple[Any, str]] = {
    'FKE_last': (False, 'no FKE after the last convolution'),
    'norm_type': ('LayerNorm', 'LayerNorm2d before the FKE\'s transfer-function head'),
    'enc_ker_layers': ([1, 1, 1, 1], 'one block per FKE sub-ResNet level'),
    'baseblock_enc_ker': (['EVSS'] * 4, 'EVSS blocks in the FKE'),
}
ATD_DEAD: dict[str, str] = {
    'last_ker_layers': _OFF + ' (FKE_last: false)',
    'get_ker': 'kernel-visualisation outputs only; the prediction is unchanged',
    'save_memorys': 'reversible memory saving of the FKE columns: memory only, the numerics are identical',
}
ATD_SAME = ('type', 'upscale', 'in_chans', 'img_size', 'embed_dim', 'depths', 'num_heads',
            'window_size', 'category_size', 'num_tokens', 'reducted_dim', 'convffn_kernel_size', 'img_range',
            'mlp_ratio', 'qkv_bias', 'patch_norm', 'upsampler', 'resi_connection', 'use_checkpoint')
# ATD-light's fixed choices: accepted at these values (dropped, nothing to set), refused otherwise.
ATD_LIGHT_FIXED = {'patch_size': (1, '1x1 patch embedding'), 'ape': (False, 'no absolute position embedding')}


def _refuse(source: str, key: str, value: Any, why: str, fix: str) -> ConversionError:
    return ConversionError(f'{source}: `{key}: {value!r}` {why}. {fix} (see docs/migrating.md)')


def _same(value: Any, expected: Any) -> bool:
    if expected is None:
        return value is None
    if isinstance(expected, list):
        return isinstance(value, (list, tuple)) and list(value) == expected
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, (int, float)):
        return not isinstance(value, bool) and isinstance(value, (int, float)) and value == expected
    return value == expected


def _fixed_and_dead(net: Mapping, fixed: Mapping, dead: Mapping, rep: Report, src: str) -> None:
    for key, (expected, meaning) in fixed.items():
        if key not in net:
            continue
        if not _same(net[key], expected):
            raise _refuse(src, f'network_g.{key}', net[key], f'selects a variant of the authors\' network that is '
                          f'not implemented here (their released configurations use {expected!r}: {meaning})',
                          f'Set it to {expected!r} or remove it.')
        rep.add(f'network_g.{key}', 'dropped', f'{expected!r} is the only value the released configurations use '
                f'({meaning}); built in')
    for key, why in dead.items():
        if key in net:
            rep.add(f'network_g.{key}', 'dropped', why)


def _uniform(src: str, key: str, rows: Any, ncol: int) -> list:
    """One list per column (the authors' [[...], [...]] layout) -> the common list; refuse if columns differ."""
    if not isinstance(rows, (list, tuple)) or not rows:
        raise _refuse(src, key, rows, 'is not a list', 'Give one list per column, as in the authors\' files.')
    if not isinstance(rows[0], (list, tuple)):
        return list(rows)
    used = [list(r) for r in rows[:ncol]]
    if any(r != used[0] for r in used):
        raise _refuse(src, key, rows, 'differs between columns', 'Use the same block counts in every column.')
    return used[0]


def _pair_or_int(src: str, key: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise _refuse(src, key, value, 'is not square', 'val.tile takes one size; use [n, n].')


def _tile_protocol(net: Mapping, rep: Report, size: Any, overlap: Any, tiled_by_default: bool,
                   note: str = '') -> dict:
    """Their network's ``sub_image`` switch -> our ``val.tile`` (tiles of size/overlap, or null = whole images)."""
    if net.get('sub_image', tiled_by_default):
        rep.add('network_g.sub_image', 'mapped', f'-> val.tile: {{size: {size}, overlap: {overlap}}}{note}')
        return {'tile': {'size': size, 'overlap': overlap}}
    rep.add('network_g.sub_image', 'mapped', '-> val.tile: null (whole images)')
    return {'tile': None}


def _refuse_unknown(net: Mapping, rep: Report, src: str, arch: str) -> None:
    """Refuse the first network key the report has no entry for (a key of theirs we do not know)."""
    unknown = [k for k in net if not any(e[0] == f'network_g.{k}' for e in rep.entries)]
    if unknown:
        raise _refuse(src, f'network_g.{unknown[0]}', net[unknown[0]], f"is not an option of the authors' {arch} "
                      'we know', 'Remove it or check its spelling.')


def convert_deeprft_network(net: Mapping, rep: Report, src: str) -> tuple[dict, dict]:
    """The authors' 83 DeepRFTv2 keys -> (our network_g, the val.tile protocol options)."""
    from fke_basicsr.archs.deeprftv2_arch import VARIANTS
    net = dict(net)
    _fixed_and_dead(net, DEEPRFT_FIXED, DEEPRFT_DEAD, rep, src)
    ours: dict[str, Any] = {'type': 'DeepRFTv2'}
    rep.add('network_g.type', 'kept')
    for key in ('inp_channels', 'mid_scale', 'train_size'):
        if key in net:
            ours[key] = net[key]
            rep.add(f'network_g.{key}', 'kept')
    if 'out_channels' in net:
        if net['out_channels'] != net.get('inp_channels', 3):
            raise _refuse(src, 'network_g.out_channels', net['out_channels'], 'differs from inp_channels',
                          'DeepRFTv2 restores the image it is given: use out_channels equal to inp_channels.')
        rep.add('network_g.out_channels', 'dropped', 'always equal to inp_channels')
    if 'patch_size' in net:
        ours['scan_window'] = net['patch_size']
        rep.add('network_g.patch_size', 'mapped', f"-> scan_window: {net['patch_size']} (the EVSS2D scan window)")
    ncol = int(net.get('num_global_unet', 2))
    ours['num_columns'] = ncol
    rep.add('network_g.num_global_unet', 'mapped', f'-> num_columns: {ncol}')
    dims = list(net.get('dims', [48]))
    if len(set(dims)) != 1:
        raise _refuse(src, 'network_g.dims', dims, 'gives the scales different widths',
                      'Only equal widths per scale are implemented (the released files use [48, 48, 48]).')
    ours['width'] = int(dims[0])
    rep.add('network_g.dims', 'mapped', f'-> width: {dims[0]} (one width for every scale)')
    enc = _uniform(src, 'network_g.enc_max_layers', net.get('enc_max_layers', [1, 4, 8]), ncol)
    dec = _uniform(src, 'network_g.dec_max_layers', net.get('dec_max_layers', [8, 4, 1]), ncol)
    for key, own, name in (('enc_mid_layers', enc, 'enc_blocks'), ('dec_mid_layers', dec, 'dec_blocks')):
        if key in net and _uniform(src, f'network_g.{key}', net[key], ncol) != own:
            raise _refuse(src, f'network_g.{key}', net[key], f'differs from the max scale\'s counts {own}',
                          'Both scales share one block count per level here.')
        rep.add(f'network_g.{key}', 'mapped', f'-> {name} (same counts as the max scale)')
    ours['enc_blocks'], ours['dec_blocks'] = enc, dec
    rep.add('network_g.enc_max_layers', 'mapped', f'-> enc_blocks: {enc}')
    rep.add('network_g.dec_max_layers', 'mapped', f'-> dec_blocks: {dec}')

    def kinds(key: str) -> list:
        rows = net.get(key)
        if rows is None:
            raise _refuse(src, f'network_g.{key}', rows, 'is missing', 'The block kinds must be given.')
        return [list(r) for r in rows[:ncol]] if isinstance(rows[0], (list, tuple)) else [list(rows)] * ncol

    enc_k, dec_k = kinds('baseblock_enc_max_global'), kinds('baseblock_dec_max_global')
    mid_e, mid_d = kinds('baseblock_enc_mid_global'), kinds('baseblock_dec_mid_global')
    if mid_e != mid_d or any(len(set(r)) != 1 for r in mid_e) or len({r[0] for r in mid_e}) != 1:
        raise _refuse(src, 'network_g.baseblock_enc_mid_global', mid_e, 'mixes block kinds in the mid scale',
                      'The mid scale uses one block kind everywhere here (the released files: naf or localnaf).')
    mid = mid_e[0][0]

    def compact(rows: list) -> Any:
        return rows[0] if all(r == rows[0] for r in rows) else rows

    found = dict(max_enc_block_types=compact(enc_k), max_dec_block_types=compact(dec_k), mid_block_types=mid)
    variant = None
    for name, preset in VARIANTS.items():
        norm = {k: (v if isinstance(v, list) else [v] * len(enc)) for k, v in preset.items() if k != 'mid_block_types'}
        if (found['max_enc_block_types'] == norm['max_enc_block_types']
                and found['max_dec_block_types'] == norm['max_dec_block_types']
                and mid == preset['mid_block_types'] and enc == [1, 4, 8] and dec == [8, 4, 1]
                and ours['width'] == 48 and ncol == 2):
            variant = name
    if variant is None:  # the -S parameter layout with other (parameter-identical) kinds, e.g. DPDD's localnaf
        for name, preset in VARIANTS.items():
            swap = {'localnaf': 'naf', 'LocalNAFEVSBlock_patch': 'NAFEVSBlock'}
            plain = {k: ([swap.get(x, x) for x in v] if isinstance(v, list) else swap.get(v, v))
                     for k, v in found.items()}
            pre = {k: (v if isinstance(v, list) else [v] * len(enc)) for k, v in preset.items()}
            if (plain['max_enc_block_types'] == pre['max_enc_block_types']
                    and plain['max_dec_block_types'] == pre['max_dec_block_types']
                    and plain['mid_block_types'] == preset['mid_block_types'] and found != plain):
                variant = name
    ours['variant'] = variant
    ours.update(found)
    how = (f'variant {variant} inferred from the block kinds' if variant else
           'no preset matches: the explicit block kinds below define the network')
    for key in ('baseblock_enc_max_global', 'baseblock_dec_max_global', 'baseblock_enc_mid_global',
                'baseblock_dec_mid_global'):
        rep.add(f'network_g.{key}', 'mapped', f'-> variant: {variant} + max_enc/max_dec/mid_block_types ({how})')
    fke = bool(net.get('deblur_kernel', True))
    mode = net.get('deblur_kernel_mode', 'ker_max_mid')
    if fke and mode != 'ker_max_mid':
        raise _refuse(src, 'network_g.deblur_kernel_mode', mode, 'places FKEs differently from the paper',
                      'Only ker_max_mid (an FKE at the max and mid scale of every column) is implemented.')
    ours['fke'] = fke
    rep.add('network_g.deblur_kernel', 'mapped', f'-> fke: {fke}')
    if 'deblur_kernel_mode' in net:
        rep.add('network_g.deblur_kernel_mode', 'mapped', '-> fke at the max and mid scale (built in)')
    ker = list(net.get('enc_ker_layers', [1, 1, 1, 1]))
    if set(ker) != {1}:
        raise _refuse(src, 'network_g.enc_ker_layers', ker, 'puts several blocks in an FKE level',
                      'One block per FKE level is implemented ([1, 1, 1, 1]).')
    ours['fke_levels'] = len(ker)
    rep.add('network_g.enc_ker_layers', 'mapped', f'-> fke_levels: {len(ker)}')
    blocks = list(net.get('baseblock_enc_ker', ['EVSS'] * len(ker)))
    if len(set(blocks)) != 1:
        raise _refuse(src, 'network_g.baseblock_enc_ker', blocks, 'mixes FKE block kinds', 'Use one kind.')
    ours['fke_block'] = blocks[0]
    rep.add('network_g.baseblock_enc_ker', 'mapped', f'-> fke_block: {blocks[0]}')
    dk = list(net.get('dims_ker', [48]))
    ours['fke_width'] = int(dk[0])
    if 'dims_ker' in net:
        rep.add('network_g.dims_ker', 'mapped', f'-> fke_width: {dk[0]}')
    for theirs, mine in (('save_memory_global_encoder', 'save_memory_encoder'),
                         ('save_memory_global_decoder', 'save_memory_decoder'), ('save_memory_ker', 'save_memory_fke')):
        if theirs in net:
            value = net[theirs]
            ours[mine] = list(value[:ncol]) if isinstance(value, (list, tuple)) else bool(value)
            rep.add(f'network_g.{theirs}', 'mapped', f'-> {mine}: {ours[mine]} (first {ncol} columns; memory only)')
    # Test-time protocol: their sub_image tiling -> val.tile; the FKEs' own windows stay in the network.
    size = _pair_or_int(src, 'network_g.sub_image_size', net.get('sub_image_size', 512))
    overlap = _pair_or_int(src, 'network_g.overlap_size', net.get('overlap_size', 128))
    val = _tile_protocol(net, rep, size, overlap, tiled_by_default=False)
    ours['fke_window'] = {'size': size, 'overlap': overlap}
    for key in ('sub_image_size', 'overlap_size'):
        if key in net:
            rep.add(f'network_g.{key}', 'mapped', f'-> val.tile and fke_window: {{size: {size}, overlap: '
                    f'{overlap}}} (the authors\' FKEs work in windows of that size on larger maps)')
    _refuse_unknown(net, rep, src, 'DeepRFTv2')
    return ours, val


def convert_atd_network(net: Mapping, rep: Report, src: str) -> tuple[dict, dict]:
    """The authors' ATD(+FKE) keys -> (our ATD network_g, the val.tile protocol options)."""
    for key, light in (('upsampler', 'pixelshuffledirect'), ('resi_connection', '1conv')):
        if net.get(key, light) != light:
            raise _refuse(src, f'network_g.{key}', net[key], 'selects the full-size ATD, which is not implemented '
                          'here (ATD-light, the network of the paper\'s Table 5, is)', f'Use {key}: {light} with '
                          'the ATD-light sizes (embed_dim 48, depths [6, 6, 6, 6]).')
    _fixed_and_dead(net, ATD_FIXED, ATD_DEAD, rep, src)
    ours = {}
    for key, (value, what) in ATD_LIGHT_FIXED.items():
        if key in net:
            if net[key] != value:
                raise _refuse(src, f'network_g.{key}', net[key], f'differs from ATD-light ({what})',
                              f'Use {key}: {value!r}; only ATD-light is implemented.')
            rep.add(f'network_g.{key}', 'dropped', f'ATD-light always has {what}')
    for key in ATD_SAME:
        if key in net:
            ours[key] = net[key]
            rep.add(f'network_g.{key}', 'kept')
    fke = bool(net.get('FKE', True))  # their constructor's default is True
    ours['fke'] = fke
    rep.add('network_g.FKE', 'mapped' if 'FKE' in net else 'added',
            f'-> fke: {fke}' + ('' if 'FKE' in net else ' (their constructor\'s default)'))
    size = int(net.get('ker_size', 64))
    overlap = _pair_or_int(src, 'network_g.overlap_size', net.get('overlap_size', 16))
    val = _tile_protocol(net, rep, size, overlap, tiled_by_default=True, note=' (LR tiles)')
    if fke:
        ours['fke_window'] = {'size': size, 'overlap': overlap}
    for key in ('ker_size', 'overlap_size'):
        if key in net:
            rep.add(f'network_g.{key}', 'mapped', f'-> val.tile and fke_window: {{size: {size}, overlap: {overlap}}}')
    _refuse_unknown(net, rep, src, 'ATD')
    return ours, val


# ----------------------------------------------------------------------------------------------------------------
DATASET_KEEP = ('name', 'type', 'dataroot_gt', 'dataroot_lq', 'meta_info_file', 'filename_tmpl', 'io_backend',
                'use_hflip', 'use_rot', 'use_shuffle', 'num_worker_per_gpu', 'batch_size_per_gpu',
                'dataset_enlarge_ratio', 'prefetch_mode', 'pin_memory', 'persistent_workers', 'gt_size')


def _convert_dataset(phase: str, ds: Mapping, kind: str, scale: int, world: int, total_iter: int | None,
                     rep: Report, src: str, train_out: dict, val_out: dict) -> dict:
    out: dict[str, Any] = {}
    key = f'datasets.{phase}'
    for k, v in ds.items():
        path = f'{key}.{k}'
        if k == 'type' and v in ('Dataset_PairedImage', 'Dataset_PairedImage_Pad'):
            out['type'] = 'PairedImageDataset'
            rep.add(path, 'mapped', f'{v} -> PairedImageDataset (random crop, flips/rotations, same pairs)')
        elif k == 'geometric_augs':
            out['use_hflip'] = out['use_rot'] = bool(v)
            rep.add(path, 'mapped', f'-> use_hflip: {bool(v)}, use_rot: {bool(v)} (the same 8 flips/rotations)')
        elif k == 'gt_size' and kind == AUTHORS_SR and phase.startswith('train'):
            out['gt_size'] = int(v) * scale
            rep.add(path, 'mapped', f'{v} -> {int(v) * scale} (their SR loader crops gt_size LR pixels; BasicSR\'s '
                    'gt_size is the HR patch)')
        elif k == 'crop_size' and isinstance(v, (list, tuple)) and len(v) == 2 and not phase.startswith('train'):
            val_out['pad_to'] = [int(v[0]), int(v[1])]
            rep.add(path, 'mapped', f'-> val.pad_to: {list(v)} (validation frames zero-padded to that size, as '
                    'their loader does for RealBlur; the metric is computed on the original frame)')
        elif k in ('crop_size', 'crop_sizes'):
            values = v if isinstance(v, (list, tuple)) else [v]
            if any(x != -1 for x in values):
                raise _refuse(src, path, v, 'crops the validation images', 'Use -1 (whole images).')
            rep.add(path, 'dropped', '-1 = whole validation images, which BasicSR\'s val loader gives')
        elif k == 'task':
            rep.add(path, 'dropped', 'their loader picks the SR crop from it; BasicSR\'s uses `scale`')
        elif k in ('mini_batch_sizes', 'iters', 'gt_sizes'):
            continue  # the progressive schedule, below
        elif k in DATASET_KEEP or k == 'phase':
            out[k] = v
            rep.add(path, 'kept')
        else:
            out[k] = v
            rep.add(path, 'kept', '(not an authors\' key we know; passed on to the dataset)')
    if phase.startswith('train') and isinstance(ds.get('gt_size'), (list, tuple)) and out.get('type') == \
            'PairedImageDataset':
        out['type'] = 'PairedPadCropDataset'
        rep.add(f'{key}.gt_size', 'mapped', f'{list(ds["gt_size"])} (H x W) -> type PairedPadCropDataset: frames '
                'zero-padded at the bottom/right to that size, then cropped, as their loader does')
    if any(k in ds for k in ('mini_batch_sizes', 'iters', 'gt_sizes')):
        train_out['progressive'] = _progressive(ds, kind, scale, world, total_iter, rep, src, key)
    return out


def _progressive(ds: Mapping, kind: str, scale: int, world: int, total_iter: int | None, rep: Report, src: str,
                 key: str) -> list | None:
    """Restormer's mini_batch_sizes/iters/gt_sizes (per GPU) -> our train.progressive (global batch)."""
    batches, iters, sizes = ds.get('mini_batch_sizes'), ds.get('iters'), ds.get('gt_sizes')
    if not (isinstance(batches, list) and isinstance(iters, list) and isinstance(sizes, list)):
        raise _refuse(src, f'{key}.mini_batch_sizes', batches, 'is given without all of iters and gt_sizes as '
                      'lists', 'Give mini_batch_sizes, iters and gt_sizes, one entry per stage.')
    n = min(len(batches), len(iters), len(sizes))
    factor = scale if kind == AUTHORS_SR else 1
    stages = [{'iters': int(iters[j]), 'gt_size': (int(sizes[j]) * factor if isinstance(sizes[j], int)
                                                   else [int(s) * factor for s in sizes[j]]),
               'batch': int(batches[j]) * world} for j in range(n)]
    extra = f' (extra entries beyond {n} stages are unused, as in their code)' if len({len(batches), len(iters),
                                                                                        len(sizes)}) > 1 else ''
    if total_iter is not None:  # their schedule keeps the last stage until total_iter; ours must sum to it
        kept, start = [], 0
        for st in stages:
            if start >= total_iter:
                break
            kept.append(dict(st))
            start += st['iters']
        kept[-1]['iters'] += total_iter - sum(s['iters'] for s in kept)
        if [s['iters'] for s in kept] != [s['iters'] for s in stages]:
            extra += f'; stage iterations fitted to train.total_iter {total_iter}: {[s["iters"] for s in kept]}'
        stages = kept
    loader_batch, loader_size = ds.get('batch_size_per_gpu'), ds.get('gt_size')
    trivial = (len(stages) == 1 and stages[0]['batch'] // world == loader_batch
               and stages[0]['gt_size'] == (loader_size * factor if isinstance(loader_size, int) else loader_size))
    detail = (f'-> train.progressive {stages} (batch = mini_batch_sizes x world size {world}: their sizes are per '
              f'GPU, ours global){extra}')
    if trivial:
        detail = ('one stage equal to the loader\'s batch_size_per_gpu and gt_size: training at that fixed size is '
                  'what the loader already does')
    for k in ('mini_batch_sizes', 'iters', 'gt_sizes'):
        if k in ds:
            rep.add(f'{key}.{k}', 'dropped' if trivial else 'mapped', detail)
    return None if trivial else stages


def _convert_train(train: Mapping, kind: str, rep: Report, src: str) -> dict:
    out: dict[str, Any] = {}
    for k, v in train.items():
        path = f'train.{k}'
        if k == 'gt_for_train':
            if kind == AUTHORS_DEBLUR and not v:
                raise _refuse(src, path, v, 'turns off the half-resolution supervision',
                              'DeblurModel always supervises the half-res outputs against the GT pyramid; set it '
                              'to true.')
            rep.add(path, 'dropped', 'DeblurModel always supervises the half-res outputs against the Gaussian-pyramid '
                    'GT (what their net(lq, gt) call computes inside the network)' if kind == AUTHORS_DEBLUR
                    else 'their model passes GT to the network; ATD ignores it')
        elif k == 'mixing_augs':
            if isinstance(v, Mapping) and v.get('mixup'):
                raise _refuse(src, f'{path}.mixup', True, 'asks for mixup augmentation, which is not implemented',
                              'Set mixup: false (every released configuration does).')
            rep.add(path, 'dropped', 'mixup: false (mixup_beta / use_identity only act with mixup on)')
        elif k == 'fft_loss_opt' and isinstance(v, Mapping) and v.get('type') in ('FourierLoss', 'FFTLoss'):
            out[k] = {**v, 'type': 'FreqLoss'}
            rep.add(f'{path}.type', 'mapped', f'{v["type"]} -> FreqLoss (weight x mean |rfft2(pred) - rfft2(gt)|)')
            for kk in v:
                if kk != 'type':
                    rep.add(f'{path}.{kk}', 'kept')
        elif k == 'use_fp16':
            out['amp'] = 'fp16' if v else 'off'
            rep.add(path, 'mapped', f'-> amp: {out["amp"]}')
        else:
            out[k] = v
            rep.add(path, 'kept')
    return out


VAL_DROPS = {
    'rgb2bgr': (True, 'validation images are written BGR by BasicSR\'s tensor2img, as with true'),
    'use_image': (True, 'metrics are computed on the uint8 images, BasicSR\'s way'),
}


def _convert_val(val: Mapping, kind: str, rep: Report, src: str) -> dict:
    out: dict[str, Any] = {}
    for k, v in val.items():
        path = f'val.{k}'
        if k == 'window_size':
            out['size_multiple'], out['pad_mode'] = int(v), 'constant'
            rep.add(path, 'mapped', f'-> val.size_multiple: {v}, val.pad_mode: constant (zero padding at the '
                    'bottom/right, cropped back)')
        elif k in VAL_DROPS:
            expected, why = VAL_DROPS[k]
            if bool(v) is not expected:
                raise _refuse(src, path, v, 'is not supported', f'Set it to {expected} or remove it.')
            rep.add(path, 'dropped', why)
        elif k == 'max_minibatch':
            rep.add(path, 'dropped', 'unused by their validation (one image per step)')
        elif k == 'save_path':
            rep.add(path, 'dropped', 'images are saved under results/<name>/visualization (or experiments/<name>/'
                    'visualization) by BasicSR; move them from there if needed')
        else:
            out[k] = v
            rep.add(path, 'kept')
    return out


def _cuda_count() -> int:
    try:
        import torch
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover
        return 0


def convert(opt: Mapping, is_train: bool = True, world_size: int | None = None, source: str = 'options',
            check_gpus: bool = False) -> tuple[dict, Report]:
    """Convert a foreign options dict to ours; returns (converted dict, report). Ours/BasicSR's pass unchanged.

    ``world_size``: the number of processes the run will have (their batch sizes are per GPU); default the
    file's num_gpu. ``check_gpus``: refuse a num_gpu above what this machine has (done at launch).
    """
    kind = detect(opt)
    rep = Report(source=source, kind=kind or 'fke_basicsr/BasicSR')
    if kind is None:
        return copy.deepcopy(dict(opt)), rep
    src = source
    num_gpu = opt.get('num_gpu', 'auto')
    if check_gpus and isinstance(num_gpu, int) and num_gpu > _cuda_count():
        have = _cuda_count()
        raise ConversionError(f'{src}: num_gpu: {num_gpu}, but this machine has {have} CUDA GPU(s); set num_gpu: '
                              f'{have}{" (CPU)" if have == 0 else ""} or auto.')
    if world_size is None:
        world_size = num_gpu if isinstance(num_gpu, int) and num_gpu > 0 else 1
    out: dict[str, Any] = {}
    net = opt.get('network_g') or {}
    if kind == ATD_OWN:
        if 'dim_ffn_td' in net:
            raise _refuse(src, 'network_g.dim_ffn_td', net['dim_ffn_td'], 'is ATD v2.0\'s token-dictionary FFN',
                          'fke_basicsr implements ATD v1 (the network the DeepRFTv2 paper extends with FKE): use '
                          'ATD\'s v1 option files (CVPR 2024 release) or remove the v2-only keys.')
        out = copy.deepcopy(dict(opt))
        for k in leaf_keys(opt):
            rep.add(k, 'kept')
        if 'use_fp16' in (opt.get('train') or {}):
            out['train'] = _convert_train(opt['train'], kind, Report(), src)
            rep.add('train.use_fp16', 'mapped', f'-> train.amp: {out["train"]["amp"]}')
        rep.add('model_type', 'kept', 'ATDModel = our RestorationModel, registered under ATD\'s name')
        for phase, ds in (out.get('datasets') or {}).items():
            if check_gpus and isinstance(ds, dict) and ds.get('prefetch_mode') == 'cuda' and not _cuda_count():
                ds['prefetch_mode'] = None
                rep.add(f'datasets.{phase}.prefetch_mode', 'mapped', 'cuda -> ~ (no CUDA on this machine)')
        return out, rep

    deblur = kind == AUTHORS_DEBLUR
    model = opt.get('model_type')
    ours_model = 'DeblurModel' if deblur else 'RestorationModel'
    out['name'] = opt.get('name') or ('test_' if not is_train else '') + osp.splitext(osp.basename(src))[0]
    rep.add('name', 'kept' if 'name' in opt else 'added',
            '' if 'name' in opt else f'{out["name"]} (from the file name)')
    out['model_type'] = ours_model
    rep.add('model_type', 'mapped' if model else 'added', f'{model or "(none)"} -> {ours_model}')
    scale = int(opt.get('scale', 1))
    out['scale'] = scale
    rep.add('scale', 'kept' if 'scale' in opt else 'added', '' if 'scale' in opt else '1')
    out['num_gpu'] = num_gpu
    rep.add('num_gpu', 'kept' if 'num_gpu' in opt else 'added', '' if 'num_gpu' in opt else 'auto')
    if 'manual_seed' in opt:
        out['manual_seed'] = opt['manual_seed']
        rep.add('manual_seed', 'kept')
    net_g, tile = (convert_deeprft_network if deblur else convert_atd_network)(net, rep, src)
    if not deblur and scale != int(net_g.get('upscale', scale)):
        raise _refuse(src, 'network_g.upscale', net_g.get('upscale'), f'differs from scale: {scale}',
                      'Make them equal.')
    train_in = opt.get('train') or {}
    total = int(train_in['total_iter']) if is_train and 'total_iter' in train_in else None
    train_out: dict[str, Any] = {}
    val_extra: dict[str, Any] = {}
    datasets = {}
    for phase, ds in (opt.get('datasets') or {}).items():
        if not is_train and phase.startswith('train'):
            rep.add(f'datasets.{phase}', 'dropped', 'a test run reads no training set')
            continue
        datasets[phase] = _convert_dataset(phase, ds or {}, kind, scale, world_size, total, rep, src,
                                           train_out if phase.startswith('train') else {}, val_extra)
    default_val: dict[str, Any] = {}
    if not datasets:
        if is_train:
            raise ConversionError(f'{src}: no `datasets` section; a training file needs datasets.train (see '
                                  'docs/migrating.md).')
        bench, folders, default_val = _default_test_set(f'{src} {opt.get("name") or ""}')
        datasets['test_1'] = {'name': f'{bench}-test', 'type': 'PairedImageDataset',
                              'dataroot_gt': folders[0], 'dataroot_lq': folders[1], 'filename_tmpl': '{}',
                              'io_backend': {'type': 'disk'}}
        rep.add('datasets', 'added', f'test_1: the {bench} test set in our layout ({folders[0]}, {folders[1]}; '
                'datasets/README.md); their file has none (their test scripts supply it)')
    out['datasets'] = datasets
    out['network_g'] = net_g
    path = {}
    for k, v in (opt.get('path') or {}).items():
        if k == 'param_key':
            path['param_key_g'] = v
            rep.add('path.param_key', 'mapped', f'-> path.param_key_g: {v}')
        else:
            path[k] = v
            rep.add(f'path.{k}', 'kept')
    if not is_train and 'pretrain_network_g' not in path:
        path['pretrain_network_g'] = None
        rep.add('path.pretrain_network_g', 'added', '~ : set it to the checkpoint to evaluate (random weights '
                'otherwise)')
    out['path'] = path
    if is_train:
        train = _convert_train(train_in, kind, rep, src)
        if train_out.get('progressive'):
            if not deblur:
                raise _refuse(src, 'datasets.train.mini_batch_sizes', opt['datasets']['train'].get('mini_batch_sizes'),
                              'asks for progressive patch sizes in SR training', 'Progressive training is '
                              'DeblurModel\'s; use one stage equal to batch_size_per_gpu / gt_size.')
            train['progressive'] = train_out['progressive']
        if deblur:
            train.setdefault('grad_clip_norm', 0.01)
            rep.add('train.grad_clip_norm', 'added', '0.01 (the max-norm their model clips at with use_grad_clip)')
        out['train'] = train
    elif 'train' in opt:
        rep.add('train', 'dropped', 'a test run reads no train section')
    val = {**_convert_val(opt.get('val') or {}, kind, rep, src), **val_extra}
    if tile.get('tile') is not None:
        val['tile'] = tile['tile']
    for k, v in default_val.items():
        if k not in val:
            val[k] = v
            rep.add(f'val.{k}', 'added', f'{v} (the protocol of that benchmark, docs/migrating.md)')
    if 'metrics' not in val:
        val['metrics'] = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                          'ssim': {'type': 'calculate_ssim_matlab', 'crop_border': 0}}
        rep.add('val.metrics', 'added', 'PSNR and 3-D SSIM on RGB (the paper\'s motion-deblurring protocol)')
    if not is_train:
        val.setdefault('save_img', True)
    out['val'] = val
    for k in ('logger', 'dist_params', 'find_unused_parameters', 'cudnn_benchmark'):
        if k in opt:
            out[k] = opt[k]
            rep.add(k, 'kept')
    if deblur and is_train:
        out.setdefault('find_unused_parameters', True)
        rep.add('find_unused_parameters', 'added', 'true (column 0\'s skip scales multiply an absent column)')
    done = {'name', 'model_type', 'scale', 'num_gpu', 'manual_seed', 'datasets', 'network_g', 'path', 'train',
            'val', 'logger', 'dist_params', 'find_unused_parameters', 'cudnn_benchmark'}
    for k in opt:
        if k not in done:
            raise _refuse(src, k, opt[k], 'is not a top-level option we know', 'Remove it or check its spelling.')
    return out, rep


def _default_test_set(hint: str) -> tuple[str, tuple[str, str], dict]:
    """The benchmark a network-only test file of theirs is for (from its file name): name, (gt, lq), val extras."""
    low = hint.lower()
    if 'realblur' in low:  # their val_realblur.py zero-pads every frame to 776 x 680
        return 'RealBlur_J', ('datasets/RealBlur_J/test/sharp', 'datasets/RealBlur_J/test/blur'), {'pad_to': [776, 680]}
    if 'defocus' in low or 'dpdd' in low:
        return 'DPDD', ('datasets/DPDD/test/target', 'datasets/DPDD/test/inputC'), {'metrics': {
            'psnr': {'type': 'calculate_dpdd_psnr'}, 'ssim': {'type': 'calculate_dpdd_ssim'},
            'mae': {'type': 'calculate_mae', 'better': 'lower'}}}
    return 'GoPro', ('datasets/GoPro/test/sharp', 'datasets/GoPro/test/blur'), {}


# ----------------------------------------------------------------------------------------------------------------
def dump(opt: Mapping) -> str:
    """YAML text of a converted options dict, keys in their order."""
    return yaml.safe_dump(_plain(opt), sort_keys=False, default_flow_style=None, width=110)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def _opt_index(argv: Sequence[str]) -> int | None:
    for i, a in enumerate(argv):
        if a == '-opt' and i + 1 < len(argv):
            return i + 1
    return None


def prepare_argv(argv: list[str], pipeline: str, root: str) -> list[str]:
    """Launch hook: if -opt names a foreign file, convert it, print the report, point -opt to the converted
    YAML and arrange for it (and the report) to be written beside the run. Other files pass unchanged."""
    i = _opt_index(argv)
    if i is None:
        return argv
    src = argv[i]
    opt = load_yaml(src)
    if detect(opt) is None:
        return argv
    launched = any(a in ('--launcher=pytorch', '--launcher=slurm') for a in argv) or any(
        a == '--launcher' and j + 1 < len(argv) and argv[j + 1] != 'none' for j, a in enumerate(argv))
    world = int(os.environ.get('WORLD_SIZE', 1)) if launched else 1
    is_train = pipeline == 'train'
    out, rep = convert(opt, is_train=is_train, world_size=world, source=src, check_gpus=True)
    rank0 = int(os.environ.get('RANK', 0)) == 0
    if rank0:
        print(rep.text(), flush=True)
    folder = tempfile.mkdtemp(prefix='fke_converted_')
    stem = osp.splitext(osp.basename(src))[0]
    converted = osp.join(folder, f'{stem}.converted.yml')
    text = f'# Converted by fke_basicsr.convert_options from {src}\n' + dump(out)
    with open(converted, 'w', encoding='utf-8') as f:
        f.write(text)
    _write_beside_run(text, rep.text(), stem)
    return [*argv[:i], converted, *argv[i + 1:]]


def _write_beside_run(yaml_text: str, report: str, stem: str) -> None:
    """Wrap the pipelines' make_exp_dirs: after the run folder exists, write the converted YAML and report."""
    import basicsr.test as bt
    import basicsr.train as btr
    for module in (btr, bt):
        original = getattr(module.make_exp_dirs, '__wrapped_make_exp_dirs__', module.make_exp_dirs)

        def make_exp_dirs(opt, _original=original):
            _original(opt)
            if int(opt.get('rank', 0) or 0) != 0:
                return
            paths = opt['path']
            where = paths.get('experiments_root') if opt.get('is_train') else paths.get('results_root')
            if where and osp.isdir(where):
                with open(osp.join(where, f'{stem}.converted.yml'), 'w', encoding='utf-8') as f:
                    f.write(yaml_text)
                with open(osp.join(where, f'{stem}.migration.txt'), 'w', encoding='utf-8') as f:
                    f.write(report + '\n')

        make_exp_dirs.__wrapped_make_exp_dirs__ = original
        module.make_exp_dirs = make_exp_dirs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m fke_basicsr.convert_options',
                                     description='Convert the DeepRFTv2 authors\' or ATD\'s options file to ours.')
    parser.add_argument('input', help='their YAML file')
    parser.add_argument('-o', '--output', help='where to write the converted YAML (default: print it)')
    parser.add_argument('--test', action='store_true', help='convert for basicsr/test.py (default: auto from '
                        'the file: a file without train section or datasets.train is a test file)')
    parser.add_argument('--world-size', type=int, default=None,
                        help='processes the run will use (their batch sizes are per GPU); default: the file\'s '
                             'num_gpu')
    args = parser.parse_args(argv)
    try:
        opt = load_yaml(args.input)
        is_train = not args.test and 'train' in (opt.get('datasets') or {})
        out, rep = convert(opt, is_train=is_train, world_size=args.world_size, source=args.input)
    except OptionsError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(rep.text(), file=sys.stderr if not args.output else sys.stdout)
    text = f'# Converted by fke_basicsr.convert_options from {args.input}\n' + dump(out)
    if args.output:
        if osp.abspath(args.output) == osp.abspath(args.input):
            print('error: -o must not be the input file (inputs are never overwritten)', file=sys.stderr)
            return 2
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(text)
    else:
        print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
