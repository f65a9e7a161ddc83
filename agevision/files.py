"""Output files written safely: to a unique temporary file beside the target, renamed into
place when complete. The one home of that rule for every writer (video, records, people
CSV, report, images, weights, checkpoints).

The temporary file is made with `tempfile.mkstemp` in the target's folder: created
exclusively (a planted file or symlink there is never followed or overwritten), unique (two
runs on one target never write the same file), and on the same file system as the target,
so that the final rename is atomic: the target holds either its old content or the whole
new file, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from agevision.errors import AgevisionError


def check_writable(target: Path) -> Path:
    """`target` as a Path; AgevisionError if it cannot be written (a folder, a missing or
    read-only folder)."""
    target = Path(target)
    if target.is_dir():
        raise AgevisionError(f"cannot write {target}: it is a folder")
    if not target.parent.is_dir():
        raise AgevisionError(f"cannot write {target}: folder {target.parent} does not exist")
    if not _can_create_in(target.parent):
        raise AgevisionError(f"cannot write {target}: folder {target.parent} is not writable")
    return target


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in `folder`: tried (a temporary file, removed at once), since
    permission bits do not tell for root or for special file systems."""
    try:
        fd, name = tempfile.mkstemp(prefix=".agevision-probe.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_folder_writable(folder: Path, what: str) -> Path:
    """`folder` as a Path; AgevisionError unless it is a writable folder or can be made in a
    writable one (it is not made here). `what` names it in the error ("--report")."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AgevisionError(f"cannot write {what} {folder}: it is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not _can_create_in(existing):
        raise AgevisionError(f"cannot write {what} {folder}: {existing} is not writable")
    return folder


def refuse_same_files(named: dict[str, Path | None]) -> None:
    """AgevisionError if two of the named paths (option name -> path, None skipped) are the
    same file: two outputs, or an output and the input (symlinks resolved)."""
    seen: dict[str, str] = {}
    for name, path in named.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise AgevisionError(f"{name} and {seen[key]} are the same file ({path}): give each its own path")
        seen[key] = name


PARTIAL = ".partial"  # the ending of an `AtomicFile`'s temporary name


def remove_partials(folder: Path) -> int:
    """Remove the temporary files that `AtomicFile`s left in `folder` when their process was
    killed (".NAME.XXXX.partial", plain files only; links are left alone). For folders that
    one run owns (a batch video's). Returns how many were removed."""
    removed = 0
    for path in Path(folder).glob(f".*{PARTIAL}"):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class AtomicFile:
    """A unique temporary file beside `target`, moved onto it by commit().

    path: the temporary file (exists, empty, mode 0600 until committed). commit() renames
    it onto the target with the usual permissions; discard() removes it. Use as a context
    manager: leaving the block by an exception discards, and so does leaving it without
    commit(). Raises AgevisionError if the target cannot be written.
    """

    def __init__(self, target: Path) -> None:
        self.target = check_writable(target)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=PARTIAL, dir=self.target.parent)
        except OSError as err:
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None
        os.close(fd)
        self.path = Path(name)
        self.done = False

    def commit(self) -> Path:
        """Move the finished temporary file onto the target; returns the target."""
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(self.path, 0o666 & ~umask)
            os.replace(self.path, self.target)
        except OSError as err:
            self.discard()
            raise AgevisionError(f"cannot write {self.target}: {err.strerror}") from None
        self.done = True
        return self.target

    def discard(self) -> None:
        """Remove the temporary file (safe to call twice, or after commit)."""
        if not self.done:
            self.path.unlink(missing_ok=True)
            self.done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def write_atomic(target: Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `target` through an `AtomicFile`; returns the target.

    Raises AgevisionError if it cannot be written (the disk full included); the target is
    then left as it was.
    """
    with AtomicFile(target) as out:
        try:
            out.path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        except OSError as err:
            raise AgevisionError(f"cannot write {out.target}: {err.strerror}") from None
        return out.commit()
