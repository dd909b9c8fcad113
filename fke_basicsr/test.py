"""Testing entry point: ``python -m fke_basicsr.test -opt <yml>`` (BasicSR's test pipeline, checked options)."""
import sys

from fke_basicsr.launch import run


def main() -> None:
    sys.exit(run('test'))


if __name__ == '__main__':
    main()
