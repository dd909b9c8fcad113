"""Writing files without losing anything: atomic, with the user's umask, never over an input (docs/reliability.md).

Every file the package writes (checkpoints, training states, inferred images, JSON reports, prepared data) goes
through :func:`atomic_write`: the bytes land in ``.<name>.<pid>.tmp`` beside the target, are flushed to disk,
get the permissions a plain ``open()`` would have given them (``0666 & ~umask``, not mkstemp's 0600), and are
then renamed over the target in one step. A killed write leaves only a ``*.tmp`` file, which
:func:`remove_stale_tmp` deletes at the next start.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Callable, IO, Iterable, Iterator

__all__ = ['TMP_SUFFIX', 'atomic_write', 'current_umask', 'remove_stale_tmp', 'same_file', 'UserError',
           'OneLineParser', 'run_cli', 'keyboard_interrupt_exit', 'check_writable_folder']

TMP_SUFFIX = '.tmp'


class UserError(ValueError):
    """A mistake the user can fix (bad argument, unsafe file, unreadable data); the CLIs print it and exit 2."""


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tmp_name(path: Path) -> Path:
    return path.with_name(f'.{path.name}.{os.getpid()}{TMP_SUFFIX}')


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], mode: int | None = None) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, give it the umask's mode and rename it.

    ``mode`` defaults to ``0o666 & ~umask`` (what ``open(path, 'wb')`` would create). The target folder must
    exist. On any failure the temporary file is removed and the target is left as it was.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    if mode is None:
        mode = 0o666 & ~current_umask()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # O_CREAT applies the umask again; chmod makes the mode exact
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def remove_stale_tmp(folders: Iterable[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """Delete the ``.<name>.<pid>.tmp`` files a killed :func:`atomic_write` left in ``folders``.

    Only files of that exact pattern whose process is gone are removed (never a user's own ``.tmp`` file,
    never one a running writer still owns); returns what was removed.
    """
    import re
    ours = re.compile(r'^\..+\.(\d+)' + re.escape(TMP_SUFFIX) + '$')
    removed = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            continue
        pattern = f'**/.*{TMP_SUFFIX}' if recursive else f'.*{TMP_SUFFIX}'
        for tmp in folder.glob(pattern):
            m = ours.match(tmp.name)
            if m is None or (int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1)))):
                continue
            if tmp.is_file() and not tmp.is_symlink():
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed.append(tmp)
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (any spelling: symlinks, ``./``, relative vs absolute)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def keyboard_interrupt_exit(prog: str) -> Iterator[None]:
    """Turn Ctrl-C into one line on stderr and exit code 130 (the shell's convention for SIGINT)."""
    try:
        yield
    except KeyboardInterrupt:
        import sys
        print(f'{prog}: interrupted (Ctrl-C); files already written are complete, nothing partial is left.',
              file=sys.stderr)
        raise SystemExit(130) from None


def run_cli(prog: str, main, argv=None, catch: tuple = (UserError, ValueError, FileNotFoundError)) -> int:
    """Call ``main(argv)``; a user error prints one ``error:`` line (exit 2), Ctrl-C one line (exit 130)."""
    import sys
    try:
        with keyboard_interrupt_exit(prog):
            return main(argv)
    except catch as err:
        text = ' '.join(str(err).split('\n')) if not isinstance(err, UserError) or '\n' not in str(err) else str(err)
        print(f'error: {text}', file=sys.stderr)
        return 2


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (``prog: error: ... (see --help)``) and exit code 2."""

    def error(self, message: str):  # noqa: D102
        import sys
        print(f'{self.prog}: error: {message} (see --help)', file=sys.stderr)
        raise SystemExit(2)


def check_writable_folder(path: str | os.PathLike, what: str) -> Path:
    """``path`` is (or can be created as) a folder this process may write into; UserError naming it otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f'{what}: {path} is a file; give a folder (it is created if missing).')
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f'{what}: {probe} is not writable; choose a folder you can write to.')
    return path
