"""Training entry point: ``python -m fke_basicsr.train -opt <yml> [--auto_resume] [--launcher pytorch]``.

Same flags as BasicSR's ``basicsr/train.py`` plus ``--local-rank`` and ``--dist-backend gloo|nccl``.
"""
import sys

from fke_basicsr.launch import run


def main() -> None:
    sys.exit(run('train'))


if __name__ == '__main__':
    main()
