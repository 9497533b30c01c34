"""Who may use a models folder: `flock`s on files inside it, held for the server's lifetime.

A single server takes `<models>/corral.lock` exclusively: two servers on one folder would each
reconcile the folder against the catalogue and delete what the other is writing.

The nodes of a cluster (CORRAL_CLUSTER) share the folder, so each takes `corral.lock` shared (no
single server can start on a folder the cluster uses, nor a node on a single server's folder)
and `<models>/nodes/<name>.lock` exclusively, named after the node: two processes that would be
the same node (the same CORRAL_NODE_NAME, by default the host name) are refused, as a second
server on one folder is. On a local filesystem these locks reach the processes of this host;
NFSv4 and CephFS carry `flock` to every client, so there they reach every host.

The kernel (or the file server) drops a `flock` when its holder dies, even by SIGKILL, so a
crashed server never leaves a lock that needs clearing by hand. An exclusively held file says who
holds it (pid, listen URL, start time), so that a refused server can name the running one; a
lock file is never deleted, since unlinking one races with the next server opening it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

LOCK_NAME = "corral.lock"
NODE_LOCKS = "nodes"
CLUSTER_MARK = {"cluster": True}  # what corral.lock says while cluster nodes share the folder


class StoreInUse(Exception):
    """Another live server holds the models folder; the message names it."""


class StoreLock:
    """The held locks; `release` (or the process ending) lets the next server in."""

    def __init__(self, path: Path, fd: int, node_fd: int | None = None) -> None:
        self.path = path
        self._fd: int | None = fd
        self._node_fd = node_fd  # cluster mode: the node's own lock; `_fd` is then held shared

    @classmethod
    def acquire(cls, models: Path, listen_url: str) -> StoreLock:
        """Take the folder alone, without waiting, or raise StoreInUse naming the holder.

        Blocking (a small file write): call it off the event loop.
        """
        fd = _open(models / LOCK_NAME)
        try:
            if not _lock(fd, fcntl.LOCK_EX):
                holder = _read_holder(fd)
                if holder == CLUSTER_MARK:
                    raise StoreInUse(f"the models folder {models} is in use by corral cluster nodes (CORRAL_CLUSTER=1)")
                raise StoreInUse(f"the models folder {models} is in use by another corral server "
                                 f"({_describe(holder)})")
            _write(fd, _holder(listen_url))
        except BaseException:
            os.close(fd)
            raise
        return cls(models / LOCK_NAME, fd)

    @classmethod
    def acquire_node(cls, models: Path, node: str, listen_url: str) -> StoreLock:
        """Share the folder with the other nodes of a cluster, as the one node named `node`.

        Raises StoreInUse when a single server holds the folder, or another process is this node.
        Blocking, like `acquire`.
        """
        fd = _open(models / LOCK_NAME)
        try:
            if not _lock(fd, fcntl.LOCK_SH):
                raise StoreInUse(f"the models folder {models} is in use by a corral server outside cluster mode "
                                 f"({_describe(_read_holder(fd))})")
            _write(fd, CLUSTER_MARK)  # every node writes the same bytes
            node_fd = _open(models / NODE_LOCKS / f"{node}.lock")
        except BaseException:
            os.close(fd)
            raise
        try:
            if not _lock(node_fd, fcntl.LOCK_EX):
                raise StoreInUse(f"the models folder {models} is in use by another corral node named {node} "
                                 f"({_describe(_read_holder(node_fd))}); give each node its own CORRAL_NODE_NAME")
            _write(node_fd, _holder(listen_url))
        except BaseException:
            os.close(node_fd)
            os.close(fd)
            raise
        return cls(models / LOCK_NAME, fd, node_fd)

    def release(self) -> None:
        """Empty the file this server alone held (nobody holds it now) and drop the locks."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        own = fd if self._node_fd is None else self._node_fd
        with contextlib.suppress(OSError):
            os.ftruncate(own, 0)
        if self._node_fd is not None:
            os.close(self._node_fd)
            self._node_fd = None
        os.close(fd)


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _lock(fd: int, kind: int) -> bool:
    """Take the lock without waiting; False when another holder keeps it from us."""
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(listen_url: str) -> dict[str, object]:
    return {"pid": os.getpid(), "url": listen_url, "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _write(fd: int, record: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode() + b"\n", 0)


def _read_holder(fd: int) -> object:
    """What the holder wrote about itself; it writes right after locking, so this is rarely empty."""
    try:
        return json.loads(os.pread(fd, 4096, 0))
    except (OSError, ValueError):
        return None


def _describe(holder: object) -> str:
    try:
        return f"pid {holder['pid']}, {holder['url']}, since {holder['since']}"  # type: ignore[index]
    except (KeyError, TypeError):
        return "it has not said who it is yet"
