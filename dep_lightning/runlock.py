"""Which process runs a run directory: a lock file beside it, ``.<run>.running``, holding the
claimant's pid (and, where ``/proc`` tells them, the boot and the process's start time).

``dep-lightning grid`` claims a point before starting it and releases it after, so two grids
over one root never run the same point; ``dep-lightning export`` leaves out a run a live grid
holds. Here, apart from both, so that neither the results package nor the sweeps package
imports the other for it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["claim", "lock_owner", "release"]


def _lock(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.running"


def lock_owner(run_dir: Path) -> int | None:
    """The pid of the live process that claimed ``run_dir`` (:func:`claim`), else None.

    The lock holds the claimant's pid and, where ``/proc`` tells them, the boot and the
    process's start time: a lock left by a grid that died before a reboot, whose pid now
    belongs to another process, is then seen as stale. (A lock with a pid alone, or on a
    system without ``/proc``, counts while that pid is alive.)"""
    try:
        fields = _lock(run_dir).read_text().split()
        owner = int(fields[0]) if fields else 0
    except (OSError, ValueError):
        return None
    if not owner or not _alive(owner):
        return None
    recorded = " ".join(fields[1:])
    if recorded and _process_identity(owner) not in (None, recorded):
        return None  # the pid was reused: another process, not the grid that claimed it
    return owner


def _process_identity(pid: int) -> str | None:
    """``<boot id> <start time in clock ticks>`` of a live process (Linux ``/proc``), else None."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, in parentheses): state is field 3,
    # starttime field 22.
    return f"{boot} {stat.rsplit(')', 1)[1].split()[19]}"


def claim(run_dir: Path) -> bool:
    """Mark ``run_dir`` as run by this process; False while another live process has it."""
    lock = _lock(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_owner(run_dir) is not None:
                return False
            lock.unlink(missing_ok=True)  # left by a grid that died
            continue
        identity = _process_identity(os.getpid())
        with os.fdopen(handle, "w") as out:
            out.write(f"{os.getpid()}{' ' + identity if identity else ''}\n")
        return True
    return False


def release(run_dir: Path) -> None:
    _lock(run_dir).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
