"""Private JSON files: written whole or not at all, readable only by their owner, and a lock
that several processes (ampbridge servers, the ``ampbridge`` command) agree on.

A credential file is replaced atomically (a temporary file in the same folder, fsync, then
``os.replace``), so a crash or a concurrent reader never sees half a file. The lock is an
``fcntl`` lock on a sidecar ``<name>.lock`` file, never on the data file itself, because the
data file is replaced (a lock on a replaced inode would lock nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

PRIVATE_MODE = 0o600


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600, atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_MODE)  # an old temporary file may have had another mode
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (raises ``OSError``, or ``ValueError`` when it is not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


@contextlib.asynccontextmanager
async def file_lock(path: Path) -> AsyncIterator[None]:
    """Hold the exclusive lock of ``path`` (waiting for it in a worker thread)."""
    target = lock_path(path)
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(target, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    try:
        await anyio.to_thread.run_sync(fcntl.flock, descriptor, fcntl.LOCK_EX, abandon_on_cancel=False)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
