"""Launcher: `python basicsr/test.py -opt <yml>` from the repository root (BasicSR's familiar command).

This folder has no __init__.py on purpose: the installed basicsr package must never be shadowed.
"""
import os.path as osp
import sys

ROOT = osp.abspath(osp.join(osp.dirname(__file__), osp.pardir))
sys.path.insert(0, ROOT)  # sys.path[0] is this script's folder, not the repository root
if sys.path[1:2] == [osp.dirname(osp.abspath(__file__))]:
    del sys.path[1]  # keep this folder's test.py from shadowing top-level modules named 'test'

from fke_basicsr.launch import run  # noqa: E402

if __name__ == '__main__':
    sys.exit(run('test', root_path=ROOT))
