"""An export's destination: one writer at a time, never over a folder that appeared meanwhile, nothing left behind.

- `claim(out)` holds an exclusive `fcntl.flock` on a lock file beside the destination (`.NAME.lock`) for the whole
  export; a second export to the same folder is refused in one sentence while the first runs. The lock goes with the
  process (the kernel drops it on SIGKILL too); the file is removed on every ordinary exit path.
- Under the lock, what a stopped export left (a `.NAME.partial-*` folder from SIGKILL, a `.NAME.replaced-*` folder
  from a kill between the two renames of `--force`) is removed, or put back when it is the only copy of an earlier
  export; `Claim.removed` names what was removed, for the output.
- `Claim.temp_folder()` makes the folder the export is written into; `Claim.move_into_place(tmp, force)` re-checks
  the destination (it must be the folder seen when the lock was taken) and renames without replacing anything.
- Folders and files follow the umask (mkdtemp and safetensors make them private: 0700 / 0600).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from graphsurgeon.errors import GraphsurgeonError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the re-check before the rename still holds
    fcntl = None

PARTIAL, REPLACED = "partial-", "replaced-"


class DestinationError(GraphsurgeonError):
    """The destination changed under the export or is held by another export: one sentence, nothing written."""


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(folder: Path) -> None:
    """Give `folder` and the files under it the modes an ordinary mkdir / open would have (0777 / 0666 & ~umask)."""
    mask = umask()
    os.chmod(folder, 0o777 & ~mask)
    for p in folder.rglob("*"):
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _leftover(name: str, kind: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.{kind}[a-z0-9_]{{8}}$")  # tempfile's 8-character names


def _rename_noreplace(src: Path, dst: Path) -> None:
    """rename(2) that fails with EEXIST when dst exists (Linux renameat2 RENAME_NOREPLACE; elsewhere check first)."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        at_fdcwd, noreplace = -100, 1
        if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # a file system without the flag: fall back
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


@dataclass
class Claim:
    out: Path  # the destination folder
    seen: tuple[int, int] | None = None  # its identity when the lock was taken (None: absent)
    removed: list[str] = field(default_factory=list)  # leftovers of stopped exports removed under the lock

    def temp_folder(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f".{self.out.name}.{PARTIAL}", dir=self.out.parent))

    def move_into_place(self, tmp: Path, *, check) -> None:
        """Rename `tmp` to the destination; an earlier folder there (checked again by `check`) is replaced only when
        it is the one seen when the lock was taken. Stopped between the two renames, the earlier folder is put back."""
        out = self.out
        follow_umask(tmp)
        now = _identity(out)
        if now != self.seen:
            what = "a folder" if out.is_dir() else "a file"
            raise DestinationError(f"{what} appeared at {out} while the export was being written (it "
                                   "was not replaced); move it away or choose another folder.")
        if now is None:
            try:
                _rename_noreplace(tmp, out)
            except OSError as err:
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise DestinationError(f"a folder appeared at {out} while the export was being "
                                           "written (it was not replaced); move it away or choose another folder.") from None
                raise
            return
        check()  # the folder seen at the start: still only an earlier export (or empty)?
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{REPLACED}", dir=out.parent))
        os.rmdir(old)
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            if not out.exists():
                old.rename(out)
            raise
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def _tidy(out: Path) -> list[str]:
    """Under the lock: remove what stopped exports to `out` left; put back an earlier export a kill left aside."""
    removed = []
    parent = out.parent
    partial, replaced = _leftover(out.name, PARTIAL), _leftover(out.name, REPLACED)
    for p in sorted(parent.iterdir()):
        if not p.is_dir() or p.is_symlink():
            continue
        if partial.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        elif replaced.match(p.name):
            if os.path.lexists(out):  # the replacement was in place: the old copy only was left
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            else:  # killed between the two renames: the earlier export goes back where it was
                p.rename(out)
    return removed


def _made_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; return those created (deepest first), to remove on a refusal."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def claim(out: Path):
    """Hold the destination `out` for one export (see the module doc); yields a Claim."""
    out = Path(os.path.abspath(out))  # "." and "out/" have a name to put the lock and temp folders beside
    made = _made_parents(out.parent)
    lock = out.with_name(f".{out.name}.lock")
    fd = None
    ok = False
    try:
        fd = _lock(lock, out)
        result = Claim(out, removed=_tidy(out))
        result.seen = _identity(out)
        yield result
        ok = True
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(lock)  # before the unlock: a waiter that opened it sees it gone and opens the new one
            os.close(fd)
        if not ok:
            for p in made:  # a refused export leaves no folder behind either
                with contextlib.suppress(OSError):
                    p.rmdir()


def _lock(lock: Path, out: Path) -> int:
    """An exclusive lock on `lock` (created if needed), or DestinationError naming the process that holds it."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is None:  # pragma: no cover
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise DestinationError(f"another export to {out} is running{who}; wait for it to finish or "
                                   "choose another folder.") from None
        if _same(fd, lock):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)  # the holder removed it as we locked it: take the new one


def _same(fd: int, path: Path) -> bool:
    st = os.fstat(fd)
    return _identity(path) == (st.st_dev, st.st_ino)
