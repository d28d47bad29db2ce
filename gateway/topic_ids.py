"""Topic id -> name map of one virtual cluster, for requests that name topics by id.

Produce v13 and Fetch v13+ (also DeleteTopics v6+) carry topic UUIDs, while ACLs
and quotas are on names. The map is learned from every Metadata response (v10+)
the gateway forwards; an id it has not seen (a client whose Metadata went
through another gateway process, or through this one before a restart) is
looked up upstream before the request naming it is decided.

Memory is bounded by the number of topics, not of responses:

- Walking a Metadata response costs ~0.4 ms per 100 topics x 6 partitions, so
  responses are kept unread and walked only when an id misses, or at once when
  the unread ones exceed :data:`UNREAD_METADATA_BYTES`. They are walked in
  arrival order, so the newest response wins.
- One id per name: a newer response naming a topic with another id (deleted
  and re-created) drops the old id. At most :data:`MAX_TOPIC_IDS` entries are
  kept; beyond that the least recently seen go.

Upstream look-ups (Metadata v12 naming the topics by id) are single-flight per
cluster: one runs at a time, every id missing meanwhile joins the next one, and
consecutive look-ups start at least :data:`LOOKUP_INTERVAL_S` apart, so a client
naming random ids delays its own requests, not the brokers.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

import trio

from codec.metadata import metadata_topic_ids
from codec.primitives import Buffer, CodecError

#: Unread Metadata responses kept (bytes) before they are indexed regardless.
UNREAD_METADATA_BYTES: Final = 4 * 1024 * 1024
#: Hard bound on remembered ids (about 150 bytes each).
MAX_TOPIC_IDS: Final = 1_000_000
#: Minimum gap between the starts of two upstream look-ups of one cluster.
LOOKUP_INTERVAL_S: Final = 0.5
#: Ids asked for in one upstream look-up; ids waiting for one, at most.
LOOKUP_BATCH: Final = 1000
MAX_WAITING_IDS: Final = 10_000

#: ``lookup(ids) -> {id: name}`` for the ids the upstream knows.
Lookup = Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, str]]]


class TopicIds:
    """Topic id -> name, learned from Metadata responses and upstream look-ups."""

    def __init__(self, lookup: Lookup, log: Any, *, lookup_interval_s: float = LOOKUP_INTERVAL_S):
        self._lookup = lookup
        self._log = log
        self._lookup_interval_s = lookup_interval_s
        self._names: dict[uuid.UUID, str] = {}
        self._ids: dict[str, uuid.UUID] = {}
        self._unread: deque[tuple[Buffer, int, int]] = deque()
        self._unread_bytes = 0
        #: Ids to ask the upstream for, in the order they were missed.
        self._waiting: dict[uuid.UUID, None] = {}
        self._lookup_done: trio.Event | None = None  # set while a look-up runs
        self._last_lookup_at = -float("inf")
        #: Upstream look-ups made (for tests and logs).
        self.lookups = 0

    def __len__(self) -> int:
        return len(self._names)

    # --- learning from responses ---------------------------------------------------

    def remember(self, frame: Buffer, body_offset: int, api_version: int) -> None:
        """Keep a Metadata response (v10+) to learn its topic ids from, lazily."""
        if api_version < 10:
            return
        self._unread.append((frame, body_offset, api_version))
        self._unread_bytes += len(frame)
        if self._unread_bytes > UNREAD_METADATA_BYTES:
            self._read_unread()

    def name_of(self, topic_id: uuid.UUID) -> str | None:
        """The name of ``topic_id`` if any Metadata response seen so far named it."""
        name = self._names.get(topic_id)
        if name is None and self._unread:
            self._read_unread()
            name = self._names.get(topic_id)
        return name

    def known_name(self, topic_id: uuid.UUID) -> str | None:
        """The name of ``topic_id`` if indexed already; only reads, so a decision
        thread may call it while the event loop learns more (:meth:`name_of` indexes
        pending responses, which only the event loop may do)."""
        return self._names.get(topic_id)

    def _read_unread(self) -> None:
        while self._unread:
            frame, offset, version = self._unread.popleft()
            self._unread_bytes -= len(frame)
            body = memoryview(frame)[offset:].toreadonly()
            try:
                pairs = metadata_topic_ids(body, version)
            except CodecError as exc:  # forwarded as the broker sent it; only the map misses it
                self._log.warning("metadata_topic_ids_unreadable", error=str(exc))
                continue
            self.learn(pairs)

    def learn(self, pairs: dict[uuid.UUID, str]) -> None:
        """Record ``{id: name}``; a name's previous id and an id's previous name are dropped."""
        names, ids = self._names, self._ids
        for topic_id, name in pairs.items():
            old_id = ids.get(name)
            if old_id is not None and old_id != topic_id:
                del names[old_id]  # the topic was deleted and re-created
            old_name = names.pop(topic_id, None)  # re-inserted: most recently seen last
            if old_name is not None and old_name != name:
                del ids[old_name]
            names[topic_id] = name
            ids[name] = topic_id
        while len(names) > MAX_TOPIC_IDS:
            stale_id = next(iter(names))
            del ids[names.pop(stale_id)]

    # --- upstream look-ups ----------------------------------------------------------

    async def resolve(self, topic_ids: Iterable[uuid.UUID]) -> None:
        """Look up upstream the ids not known yet; return once each was asked for.

        Ids the upstream does not know stay unknown (the request naming them is
        answered UNKNOWN_TOPIC_ID); a failed look-up is logged, not raised.
        """
        missing = [i for i in dict.fromkeys(topic_ids) if self.name_of(i) is None]
        for topic_id in missing:
            if len(self._waiting) < MAX_WAITING_IDS:
                self._waiting[topic_id] = None
        while any(i in self._waiting for i in missing):
            if self._lookup_done is not None:
                await self._lookup_done.wait()  # someone else is asking: maybe for ours too
            else:
                await self._run_lookup()

    async def _run_lookup(self) -> None:
        done = self._lookup_done = trio.Event()
        try:
            await trio.sleep_until(self._last_lookup_at + self._lookup_interval_s)
            self._last_lookup_at = trio.current_time()
            batch = list(self._waiting)[:LOOKUP_BATCH]
            self.lookups += 1
            try:
                found = await self._lookup(batch)
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, CodecError) as exc:
                self._log.warning("topic_id_lookup_failed", ids=len(batch), error=repr(exc))
                found = {}
            self._read_unread()  # older than the answer: the answer must win
            self.learn({i: n for i, n in found.items() if i in self._waiting})
            for topic_id in batch:
                self._waiting.pop(topic_id, None)
            self._log.info("topic_ids_looked_up", asked=len(batch), found=len(found))
        finally:  # also when this request's task is cancelled: waiters take over
            self._lookup_done = None
            done.set()
