"""Where a command's output goes, checked before the work starts.

A run that samples or evaluates for minutes and then cannot write its result has lost that work, so
every command that writes calls one of these first: an output under a regular file, a folder where a
file is asked for (or the reverse), a folder that cannot be created, a place that cannot be written,
a suffix that names no image format, a non-empty folder that would mix two runs' files: each is a
one-line `UsageError` naming the option and what is allowed. Nothing is created here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ldmkit.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # the formats an image --out may name


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (lexically; "." for a relative path with none)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and not path.is_symlink() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(folder: Path, option: str, shown: Path) -> None:
    """``folder`` exists as a writable folder, or can be created: its nearest existing ancestor is a
    folder this process may write in."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise UsageError(f"{option} {shown}: {base} is a file, not a folder, so nothing can be written under it")
    if not _writable(base):
        what = "write in" if base == Path(os.path.abspath(folder)) else "create folders in"
        raise UsageError(f"{option} {shown}: cannot {what} {base} (permission denied or read-only)")


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried, not guessed: root, read-only mounts, /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".ldmkit-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def check_output_file(path: str | Path, option: str = "--out", suffixes: tuple[str, ...] | None = None,
                      kind: str = "file name") -> Path:
    """``path`` as a file to write (replacing an existing file of that name): refused when it is a
    folder, when its suffix is not one of ``suffixes`` (when given), or when its folder cannot be
    created or written."""
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: give a {kind} ending in {', '.join(suffixes)}")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a {kind}"
                         + (f" ending in {', '.join(suffixes)}" if suffixes else ""))
    _check_creatable(path.parent, option, path)
    if path.exists() and not os.access(path, os.W_OK) and not _writable(path.parent):
        raise UsageError(f"{option} {path}: the file cannot be replaced (permission denied)")
    return path


def check_output_dir(path: str | Path, option: str = "--out", empty: bool = False, overwrite: bool = False,
                     what: str = "files", remedy: str = "choose a new folder or pass --overwrite") -> Path:
    """``path`` as a folder to write into: refused when it is a file or cannot be created or written;
    with ``empty``, also when it already holds anything, unless ``overwrite`` (the refusal ends with ``remedy``,
    what the command offers instead)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    _check_creatable(path, option, path)
    if empty and not overwrite and path.is_dir() and any(path.iterdir()):
        raise UsageError(f"{option} {path} is not empty: it would mix two runs' {what}; {remedy}")
    return path


def image_output(path: str | Path, option: str = "--out", allow_folder: bool = False, overwrite: bool = False):
    """An image output: ("file", path) for a name ending in one of `IMAGE_SUFFIXES`, written in that
    format; with ``allow_folder``, ("folder", path) for a name without a suffix (or an existing folder),
    one file per image, which must be empty unless ``overwrite``. Anything else is refused."""
    path = Path(path)
    suffix = path.suffix.lower()
    if allow_folder and (path.is_dir() or not suffix):
        return "folder", check_output_dir(path, option, empty=True, overwrite=overwrite, what="images",
                                          remedy="choose a new folder, or pass --overwrite to write into it anyway "
                                                 "(images of the same names are replaced, the others kept)")
    if suffix not in IMAGE_SUFFIXES:
        folder = " or a folder name without a suffix" if allow_folder else ""
        raise UsageError(f"{option} {path}: unknown image suffix {path.suffix or '(none)'!r}; "
                         f"allowed: {', '.join(IMAGE_SUFFIXES)}{folder}")
    return "file", check_output_file(path, option)


@contextmanager
def replacing_folder(path: str | Path, option: str = "--out", overwrite: bool = False):
    """Yield a new temporary folder next to ``path``; when the block succeeds it becomes ``path``
    (an existing ``path``, allowed only with ``overwrite``, is removed first), so the result never
    mixes old and new files and a failed run leaves ``path`` as it was. A ``path`` that is a symbolic link
    is written through: its target is replaced, the link stays."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(f"{option} {path} already exists and is not empty; choose a new folder or pass "
                         "--overwrite to replace it")
    shown, path = path, Path(os.path.realpath(path))  # a link's target: renaming would move the link itself
    _check_creatable(path.parent, option, shown)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a plain mkdir's mode, not mkdtemp's private 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
