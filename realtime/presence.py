"""Presence: who has a stream open to a session, anywhere in the cluster (CONTRACT §7).

Each process's hub keeps a `ClusterPresence`: for every session it has streams of, how
many streams each user holds *here*, and what the other processes last said about theirs.
A user is online while any process counts a stream of theirs.

How the processes learn of each other, cheaply:
- When a user's local count for a session goes 0 → 1 or 1 → 0, the hub sends one small
  *delta* to the session's channel-layer group: (worker, version, username, count). Every
  hub with streams of that session applies it; a delta for one user costs O(1), so a
  session with a thousand viewers coming and going is not an N² storm of full snapshots.
- The worker registry (realtime.workers) holds each process's full per-session user map
  and its version. A hub reads it when it first serves a session (the snapshot for the
  first stream), and every heartbeat to heal lost deltas and to drop the users of
  processes that died (a SIGKILLed process stops heartbeating and is gone after
  CHORUS_WORKER_STALE_SECONDS).
Versions count a process's presence changes (all sessions together) and only grow for
the life of the process, so an older registry row never overwrites a newer delta, and a
row says for sure that a session it lacks is no longer served only when it is newer than
what a hub knows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

PRESENCE_MESSAGE_TYPE = "session.presence"


@dataclass(slots=True)
class _RemoteView:
    version: int
    users: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Local:
    version: int = 0
    users: dict[str, int] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)  # epoch seconds of the first local stream


@dataclass(frozen=True, slots=True)
class Change:
    """A user came online (`joined`) or went offline anywhere in the cluster."""

    username: str
    joined: bool


class ClusterPresence:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._local: dict[str, _Local] = {}
        self._remote: dict[str, dict[str, _RemoteView]] = {}
        self._version = 0  # this process's presence changes so far

    def serve(self, key: str) -> None:
        """This process starts serving `key`: from now on it keeps the cluster's view."""
        self._local.setdefault(key, _Local())

    # --- reading ----------------------------------------------------------------------
    def is_online(self, key: str, username: str) -> bool:
        local = self._local.get(key)
        if local is not None and local.users.get(username):
            return True
        return any(view.users.get(username) for view in self._remote.get(key, {}).values())

    def online(self, key: str) -> list[str]:
        names = set(self._local[key].users) if key in self._local else set()
        for view in self._remote.get(key, {}).values():
            names.update(name for name, count in view.users.items() if count > 0)
        return sorted(names)

    def local_snapshot(self, key: str) -> tuple[int, dict[str, int], dict[str, float]]:
        """(version, users, since) of this process for `key`, for the registry."""
        local = self._local.get(key)
        if local is None:
            return 0, {}, {}
        return local.version, dict(local.users), dict(local.since)

    # --- this process's streams -----------------------------------------------------------
    def open(self, key: str, username: str) -> tuple[dict | None, Change | None]:
        """A local stream of `username` started. Returns the delta to broadcast (when this
        process's count went 0 → 1) and the cluster-wide change, if any."""
        was_online = self.is_online(key, username)
        local = self._local.setdefault(key, _Local())
        count = local.users.get(username, 0) + 1
        local.users[username] = count
        if count > 1:
            return None, None
        local.since[username] = time.time()
        self._version += 1
        local.version = self._version
        return self._delta(key, username, 1), None if was_online else Change(username, True)

    def close(self, key: str, username: str) -> tuple[dict | None, Change | None]:
        """A local stream of `username` ended (the reverse of `open`)."""
        local = self._local.get(key)
        if local is None or not local.users.get(username):
            return None, None
        count = local.users[username] - 1
        if count > 0:
            local.users[username] = count
            return None, None
        del local.users[username]
        local.since.pop(username, None)
        self._version += 1
        local.version = self._version
        delta = self._delta(key, username, 0)
        return delta, None if self.is_online(key, username) else Change(username, False)

    def forget(self, key: str) -> None:
        """This process no longer serves `key` (and stops hearing its deltas)."""
        self._local.pop(key, None)
        self._remote.pop(key, None)

    def _delta(self, key: str, username: str, count: int) -> dict:
        return {
            "type": PRESENCE_MESSAGE_TYPE,
            "session": key,
            "worker": self.worker,
            "v": self._local[key].version,
            "username": username,
            "count": count,
        }

    # --- what other processes say ---------------------------------------------------------
    def apply_delta(self, message: dict) -> Change | None:
        key, worker = message["session"], message["worker"]
        if worker == self.worker or key not in self._local:
            return None
        views = self._remote.setdefault(key, {})
        view = views.get(worker)
        if view is not None and message["v"] <= view.version:
            return None  # older than what we know (a registry row overtook it)
        username = message["username"]
        before = self.is_online(key, username)
        if view is None:
            view = views[worker] = _RemoteView(version=message["v"])
        view.version = message["v"]
        if message["count"] > 0:
            view.users[username] = message["count"]
        else:
            view.users.pop(username, None)
        after = self.is_online(key, username)
        return None if before == after else Change(username, after)

    def apply_registry(self, key: str, rows: dict[str, tuple[int, dict[str, int] | None]]) -> list[Change]:
        """Bring the views of other processes in line with the registry's rows of *live*
        processes: {worker: (the row's version, its users of `key` or None if it lists no
        such session)}. A row at least as new as a view replaces it (or drops it, when the
        row lacks the session); an older row is ignored; processes absent from `rows`
        (dead) are dropped."""
        if key not in self._local:
            return []
        before = set(self.online(key))
        views = self._remote.setdefault(key, {})
        for worker in [w for w in views if w not in rows]:
            del views[worker]
        for worker, (version, users) in rows.items():
            if worker == self.worker:
                continue
            view = views.get(worker)
            if view is not None and version < view.version:
                continue
            if users is None:
                views.pop(worker, None)
            else:
                views[worker] = _RemoteView(version=version, users={u: n for u, n in users.items() if n > 0})
        after = set(self.online(key))
        return [Change(name, True) for name in sorted(after - before)] + [
            Change(name, False) for name in sorted(before - after)
        ]
