"""Checkpoint layout mapping (docs/architecture.md): the authors' keys load strictly, round-trip, fail clearly."""
from __future__ import annotations

import ast
import os

import pytest
import torch
from conftest import KEYS_DIR

import fke_basicsr  # noqa: F401  (shims + registration)
from fke_basicsr.archs.deeprftv2_arch import DeepRFTv2
from fke_basicsr.checkpoints import (CheckpointMismatchError, detect_layout, from_official, load_checkpoint,
                                     official_mapping, save_state_dict_atomic, to_official)

KEYS = KEYS_DIR


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # one thread is several times faster than two on a shared 2-core machine for these small tensors
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def official_keys(variant: str) -> dict[str, list[int]]:
    """key -> shape of the authors' -B / -S state dict (tests/data/official_keys)."""
    path = KEYS / f'deeprftv2_{variant}_official_keys.txt'
    out = {}
    for line in path.read_text().splitlines():
        key, shape = line.split('\t')
        out[key] = ast.literal_eval(shape)
    return out


def synthesized(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An 'authors' checkpoint': random tensors with every listed key and shape."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=g) for k, shape in official_keys(variant).items()}


@pytest.fixture(scope='module')
def model_s():
    return DeepRFTv2(variant='S')


@pytest.fixture(scope='module')
def model_b():
    return DeepRFTv2(variant='B')


@pytest.mark.parametrize('variant', ['B', 'S'])
def test_mapping_is_a_bijection_on_every_key(variant, request):
    """Every official key maps to one of ours and back to itself, and vice versa; no two keys collide."""
    m = official_mapping('DeepRFTv2')
    off = list(official_keys(variant))
    ours = [m.from_official(k) for k in off]
    assert len(set(ours)) == len(off)
    assert [m.to_official(k) for k in ours] == off
    model_keys = list(request.getfixturevalue(f'model_{variant.lower()}').state_dict())
    assert set(ours) == set(model_keys)
    assert [m.from_official(m.to_official(k)) for k in model_keys] == model_keys
    # our names are our own: no authors' stem survives at the top level
    assert not any(k.startswith(('global_model', 'subnets_', 'subdenets_', 'kernel_estimator', 'patch_embed'))
                   for k in ours)


def test_official_checkpoint_loads_strictly_and_round_trips_s(model_s):
    sd = synthesized('S')
    load_checkpoint(model_s, {'params': sd}, strict=True)
    back = to_official(model_s.state_dict())
    assert set(back) == set(sd)
    for k, v in sd.items():
        assert back[k].shape == v.shape and torch.equal(back[k], v), k


def test_official_checkpoint_loads_strictly_and_round_trips_b(model_b):
    sd = synthesized('B', seed=1)
    ours = from_official(sd)
    missing, unexpected = model_b.load_state_dict(ours, strict=True)
    assert not missing and not unexpected
    back = to_official(model_b.state_dict())
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_layouts_detected_ours_official_and_ddp_prefix(model_s, tmp_path):
    ref = synthesized('S', seed=2)
    assert detect_layout(ref) == 'official'
    assert detect_layout(from_official(ref)) == 'ours'
    # DDP 'module.' prefix on our layout, under 'params_ema', picked automatically, loaded from a file
    ddp = {'module.' + k: v for k, v in from_official(ref).items()}
    path = tmp_path / 'net_g_5.pth'
    save_state_dict_atomic({'params_ema': ddp}, path)
    load_checkpoint(torch.nn.DataParallel(model_s), path)  # param_key=None -> auto; wrapped models unwrapped
    back = to_official(model_s.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ref.items())
    with pytest.raises(KeyError, match="param_key 'params'"):
        load_checkpoint(model_s, path, param_key='params')
    with pytest.raises(FileNotFoundError):
        load_checkpoint(model_s, tmp_path / 'absent.pth')


def test_unknown_and_missing_keys_are_reported_with_nearest_names(model_s):
    sd = from_official(synthesized('S'))
    sd['encoders_max.0.levels.1.blocks.0.conv9.weight'] = sd.pop('encoders_max.0.levels.1.blocks.0.conv1.weight')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model_s, sd)
    msg = str(err.value)
    assert '1 unknown' in msg and '1 missing' in msg
    assert 'encoders_max.0.levels.1.blocks.0.conv9.weight' in msg
    assert 'nearest: encoders_max.0.levels.1.blocks.0.conv1.weight' in msg
    # strict=False tolerates them and reports like load_state_dict
    res = load_checkpoint(model_s, sd, strict=False)
    assert res.missing_keys == ['encoders_max.0.levels.1.blocks.0.conv1.weight']
    assert res.unexpected_keys == ['encoders_max.0.levels.1.blocks.0.conv9.weight']


def test_unknown_official_key_named_in_both_layouts(model_s):
    sd = synthesized('S')
    sd['global_model.subnets_max.0.level1.blocks.0.conv9.weight'] = \
        sd.pop('global_model.subnets_max.0.level1.blocks.0.conv1.weight')
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model_s, {'params': sd})
    msg = str(err.value)
    assert '(official layout)' in msg
    assert ('encoders_max.0.levels.1.blocks.0.conv9.weight (in the file: '
            'global_model.subnets_max.0.level1.blocks.0.conv9.weight)') in msg
    assert 'nearest: encoders_max.0.levels.1.blocks.0.conv1.weight' in msg


def test_shape_mismatch_always_raises(model_s):
    sd = synthesized('S')
    sd['global_model.output_maxs.0.weight'] = torch.zeros(3, 32, 3, 3)
    with pytest.raises(CheckpointMismatchError, match=r'head_max\.0\.weight: checkpoint \(3, 32, 3, 3\)'):
        load_checkpoint(model_s, sd, strict=False)


def test_s_checkpoint_into_b_model_says_which_variant(model_b, model_s):
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(model_b, {'params': synthesized('S')})
    msg = str(err.value)
    assert 'DeepRFTv2-S checkpoint but the model is DeepRFTv2-B' in msg and 'variant: S' in msg
    with pytest.raises(CheckpointMismatchError, match='DeepRFTv2-B checkpoint but the model is DeepRFTv2-S'):
        load_checkpoint(model_s, {'params': synthesized('B')})


def test_save_state_dict_atomic_replaces_and_cleans_up(tmp_path):
    path = tmp_path / 'sub' / 'ckpt.pth'
    save_state_dict_atomic({'params': {'w': torch.ones(2)}}, path)
    save_state_dict_atomic({'params': {'w': torch.zeros(2)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.zeros(2))
    with pytest.raises(Exception):
        save_state_dict_atomic({'bad': lambda: 0}, path)  # unpicklable: the old file survives, no temp left
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.zeros(2))
    assert os.listdir(path.parent) == ['ckpt.pth']
