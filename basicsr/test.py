"""Launcher: `python basicsr/test.py -opt <yml>` from the repository root (BasicSR's familiar command).

This folder has no __init__.py on purpose: the installed basicsr package must never be shadowed.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)  # sys.path[0] is this script's folder, not the repository root
if sys.path[1:2] == [osp.dirname(osp.abspath(__file__))]:
    del sys.path[1]  # keep this folder's test.py from shadowing top-level modules named 'test'


def _basicsr_installed() -> bool:
    """False when `basicsr` resolves only to this launcher folder (a namespace package: BasicSR not installed)."""
    import importlib.util
    spec = importlib.util.find_spec('basicsr')
    return spec is not None and spec.origin not in (None, 'namespace')


if not _basicsr_installed():
    print('error: BasicSR is not installed (`basicsr` resolves to this repository\'s launcher folder); install it '
          'with `pip install basicsr==1.4.2` (see scripts/setup_venv.sh), then run this command again.',
          file=sys.stderr)
    sys.exit(2)

from fke_basicsr.launch import run  # noqa: E402

if __name__ == '__main__':
    sys.exit(run('test', root_path=ROOT))
