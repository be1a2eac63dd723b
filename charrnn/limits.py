"""What input may cost: only regular files are read, and memory is estimated before it is allocated.

A FIFO given as a file blocks forever, /dev/zero never ends, and a size taken from a file or an
option (a hidden size, a vocabulary, a number of samples) can ask for more memory than there is.
Each is refused with one CharrnnError instead: the cause, the estimate and what is available.
"""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path

from charrnn.errors import CharrnnError

KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a device",
         stat.S_IFBLK: "a device", stat.S_IFSOCK: "a socket"}


def regular_file(path: str | os.PathLike, what: str) -> int:
    """The size of `path` if it is a regular file (links followed); else a CharrnnError saying what
    it is, e.g. "x: is a FIFO (named pipe), not a checkpoint"."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CharrnnError(f"{p}: no such file") from None
    except OSError as e:
        raise CharrnnError(f"{p}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CharrnnError(f"{p}: is {KINDS.get(stat.S_IFMT(st.st_mode), 'not a regular file')}, not a {what}")
    return st.st_size


def _status_kb(path: str, key: str) -> int | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available() -> int:
    """Bytes this process may still allocate: the system's available memory (MemAvailable), and
    under `ulimit -v` no more than what is left of the address space."""
    avail = _status_kb("/proc/meminfo", "MemAvailable")
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        avail = min(avail, soft - (_status_kb("/proc/self/status", "VmSize") or 0))
    return max(avail, 0)


def size_text(n: float) -> str:
    return f"{n / 2**30:,.1f} GB" if n >= 2**30 else f"{n / 2**20:,.0f} MB"


def require(need: float, what: str) -> None:
    """Refuse `what` before it allocates `need` bytes that are not available."""
    avail = available()
    if need > avail:
        raise CharrnnError(f"{what} needs ~{size_text(need)} of memory, {size_text(avail)} available")
