"""scripts/fke_evidence.py on a tiny budget (a few iterations), and run_demo's comparison with measured runs."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import fke_basicsr  # noqa: F401

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(REPO / 'scripts'))
    spec = importlib.util.spec_from_file_location(name, REPO / 'scripts' / f'{name}.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    import torch
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # fke_evidence sets --threads in-process


@pytest.fixture(scope='module')
def shake_data(tmp_path_factory) -> Path:
    mdd = _load('make_demo_dataset')
    root = tmp_path_factory.mktemp('shake')
    rng = np.random.default_rng(0)
    mdd.write_split(str(root / 'train'), ('camera',), (128, 128), 64, 8, None, False, rng, 'shake')
    mdd.write_split(str(root / 'val'), ('coffee',), (64, 96), 48, None, 1, True, rng, 'shake')
    return root


def test_fke_evidence_tiny_budget_writes_table_figure_and_results(shake_data, tmp_path, capsys):
    ev = _load('fke_evidence')
    out = tmp_path / 'out'
    args = ['--iters', '2', '--seeds', '1', '2', '--evals', '1', '--data', str(shake_data), '--out', str(out)]
    assert ev.main(args) == 0
    res = json.loads((out / 'results.json').read_text())
    assert set(res['runs']) == {'1', '2'}
    for runs in res['runs'].values():
        assert set(runs) == {'on', 'off', 'off_time'}
        assert [p['iter'] for p in runs['on']['points']] == [0, 2] == [p['iter'] for p in runs['off']['points']]
        assert runs['off_time']['iters'] >= 1 and runs['off_time']['points'][-1]['iter'] == runs['off_time']['iters']
        assert 'kernel' in runs['on']['points'][0] and 'kernel' not in runs['off']['points'][0]
        k = runs['on']['points'][-1]['kernel']
        assert set(k['fke']) == {'fke_max.0', 'fke_mid.0'}
        assert all(-1 <= k['all_fkes'][m] <= 1 for m in ('otf_mag', 'otf_phase', 'cka_r0', 'cka_rL'))
    md = (out / 'fke_evidence.md').read_text()
    for needle in ('FKE off, equal CPU time', 'untrained (baseline)', 'identity filter', 'ceiling', 'cka_rL'):
        assert needle in md
    assert (out / 'fke_evidence.png').stat().st_size > 10_000
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['diff_iters'] == pytest.approx([a - b for a, b in zip(summary['on']['psnr'],
                                                                        summary['off']['psnr'])])
    # the report is rebuilt from results.json alone, identically
    (out / 'fke_evidence.md').unlink()
    assert ev.main(['--report-only', '--out', str(out)]) == 0   # the dataset named in results.json
    assert (out / 'fke_evidence.md').read_text() == md
    assert not list(out.glob('*.tmp*'))
    # seeds run elsewhere (same options) are merged into one report; a seed twice is refused
    other = json.loads((out / 'results.json').read_text())
    other['seeds'] = [7]
    other['runs'] = {'7': other['runs']['1']}
    (tmp_path / 'other.json').write_text(json.dumps(other))
    assert ev.main(['--report-only', '--out', str(out), '--merge', str(tmp_path / 'other.json')]) == 0
    assert json.loads((out / 'summary.json').read_text())['seeds'] == [1, 2, 7]
    assert '3 seeds (1, 2, 7)' in (out / 'fke_evidence.md').read_text()
    other['seeds'], other['runs'] = [2], {'2': other['runs']['7']}
    (tmp_path / 'dup.json').write_text(json.dumps(other))
    assert ev.main(['--report-only', '--out', str(out), '--merge', str(tmp_path / 'dup.json')]) == 2
    assert 'already in the report' in capsys.readouterr().err
    # an unfinished seed of the first run (stopped mid-seed) is replaced by the merged one
    main = json.loads((out / 'results.json').read_text())
    del main['runs']['2']['off_time']
    (out / 'results.json').write_text(json.dumps(main))
    assert ev.main(['--report-only', '--out', str(out), '--merge', str(tmp_path / 'dup.json')]) == 0
    assert json.loads((out / 'summary.json').read_text())['seeds'] == [1, 2]


def test_fke_evidence_bad_input_exits_2_without_traceback(tmp_path, capsys):
    ev = _load('fke_evidence')
    assert ev.main(['--iters', '0']) == 2
    assert '--iters' in capsys.readouterr().err
    assert ev.main(['--seeds', '1', '1']) == 2
    assert 'repeats a seed' in capsys.readouterr().err


def test_fke_evidence_report_only_needs_results(shake_data, tmp_path, capsys):
    ev = _load('fke_evidence')
    assert ev.main(['--report-only', '--data', str(shake_data), '--out', str(tmp_path / 'empty')]) == 2
    assert 'results.json' in capsys.readouterr().err


def test_run_demo_compares_with_the_measured_runs_not_a_verdict():
    rd = _load('run_demo')
    refs = ((2000, 1.4), (3000, 2.4))
    assert rd.reference_gain(2500, refs) == pytest.approx(1.9)
    assert rd.reference_gain(2000, refs) == pytest.approx(1.4)
    assert rd.reference_gain(1999, refs) is None and rd.reference_gain(3001, refs) is None
    text = rd.compare_with_reference(1.5, 2500, refs)
    assert '+1.90 dB' in text and '-0.40 dB' in text and '2,500' in text
    assert 'fewer than any' in rd.compare_with_reference(0.8, 900, refs)
    assert 'more than any' in rd.compare_with_reference(2.8, 4000, refs)
    for t in (text, rd.compare_with_reference(1.0, None, refs)):
        assert 'NOT met' not in t and 'Target' not in t


def test_fke_evidence_gpu_request_without_cuda_exits_2(shake_data, tmp_path, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    ev = _load('fke_evidence')
    assert ev.main(['--num-gpu', '1', '--data', str(shake_data), '--out', str(tmp_path)]) == 2
    assert 'CUDA' in capsys.readouterr().err
