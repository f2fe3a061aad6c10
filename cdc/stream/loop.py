"""The edge loop of one connector: read WAL, feed the router, hand its effects to the sink,
tell the slot what is durable.

The loop reads like httpcore's: read a CopyData message or wait on the socket; feed the
pure core (framing, decoder, ``ChangeRouter``); give the sink the records and positions
the router returns; write back the standby status that ``KafkaSink.confirmed`` allows.
Keepalives that ask for a reply are answered at once; while the sink waits for Kafka
(backpressure, a commit) it calls back here every ~100 ms, so a status update still goes
out and PostgreSQL never drops us for silence (``wal_sender_timeout``).

A stop (SIGTERM) is taken between two messages: in ``exactly_once`` mode at once (every
published unit is whole; the open Kafka transaction is committed), in ``at_least_once``
mode once the source transaction in hand is finished (bounded by ``drain_timeout``), so
a restart repeats nothing.

Everything it talks to is a small ``Protocol`` or the sink, so tests drive it with a
replay of captured bytes and a fake producer. The per-message path must not gain log
lines or needless calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from cdc.errors import Stopped
from cdc.kafka.sink import KafkaSink
from cdc.lsn import format_lsn
from cdc.positions import Position
from cdc.protocol.messages import PrimaryKeepalive, Relation
from cdc.protocol.pgoutput import PgoutputDecoder
from cdc.protocol.replication import (
    encode_standby_status,
    parse_copy_data,
    split_xlog_data,
    unix_us_to_pg_us,
)
from cdc.stopping import abandoned
from cdc.stream.router import (
    ChangeRouter,
    Effect,
    Publish,
    RelationInfo,
    SaveState,
    SourceCommit,
)

__all__ = ["ReplicationStream", "StreamLoop", "StreamTimings"]

# How often the loop leaves the hot path to poll Kafka, commit when due and maybe send a
# status update: often enough for ~ms latency, rare enough to cost nothing.
HOUSEKEEPING_EVERY = 512
# The slot hears from us at least this often when something changed: confirming
# promptly lets PostgreSQL recycle WAL; more often would only add round trips.
CONFIRM_INTERVAL_S = 1.0
# Wait on the socket at most this long when idle, so stop requests are seen quickly.
IDLE_WAIT_S = 0.1
# ... and at most this long while records are not durable yet: acks are only seen when
# polled, and the commit-to-confirm latency should not wait for the next WAL message.
ACK_WAIT_S = 0.002


class ReplicationStream(Protocol):
    """The replication connection in COPY_BOTH mode (``cdc.postgres.source``)."""

    def read(self) -> memoryview | bytes | None:
        """One CopyData payload if one is buffered, else None (never blocks)."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until the server sends something or ``timeout`` passes."""
        ...

    def send(self, payload: bytes) -> None:
        """Send one CopyData message (a standby status update)."""
        ...


class StreamTimings:
    """The loop's settings that tests shorten."""

    __slots__ = ("drain_timeout_s", "shutdown_timeout_s", "status_interval_s")

    def __init__(
        self,
        *,
        status_interval_s: float = 10.0,
        drain_timeout_s: float = 10.0,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        self.status_interval_s = status_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s


class StreamLoop:
    """Streams one connector until ``stop`` is set or an error is raised."""

    def __init__(
        self,
        *,
        source: ReplicationStream,
        decoder: PgoutputDecoder,
        router: ChangeRouter,
        sink: KafkaSink,
        stop: threading.Event,
        relation_info: Callable[[Relation], RelationInfo],
        handle: Callable[[Effect], None],
        periodic: Callable[[], None],
        durable: Callable[[Position], None] | None,
        observe_latency: Callable[[list[int]], None],
        log: Any,
        timings: StreamTimings | None = None,
        start_lsn: int = 0,
        watch: Callable[[], None] | None = None,
    ) -> None:
        """Args:
        source: the replication stream, started.
        decoder: the pgoutput decoder of the protocol version asked for.
        router: the pure core: messages in, effects out.
        sink: the connector's Kafka sink, started.
        stop: set to stop (SIGTERM).
        relation_info: resolves what a Relation needs from the catalog (and makes its
            table's topics): an edge.
        handle: carries out the router's rare effects (topics, snapshot requests,
            type invalidation, reports).
        periodic: the pipeline's duties between messages (snapshot chunks, metrics).
        durable: told the position Kafka durably holds, before the slot is confirmed
            past it (the TOAST memory); None when unused.
        observe_latency: given the commit timestamps (Unix us) of source transactions
            that just became durable.
        log: the connector's bound logger.
        timings: intervals and timeouts.
        start_lsn: where the stream started (the slot's confirmed LSN).
        watch: also called while the sink waits for Kafka (``periodic`` is not): checks
            that matter most then, such as the WAL the slot holds back; it keeps its own
            interval, so it must cost nothing when not due.
        """
        self._source = source
        self._decoder = decoder
        self._router = router
        self._sink = sink
        self._stop = stop
        self._relation_info = relation_info
        self._handle = handle
        self._periodic = periodic
        self._durable = durable
        self._observe_latency = observe_latency
        self._log = log
        self._timings = timings or StreamTimings()
        self.received = start_lsn
        self.server_wal_end = start_lsn
        self._last_status = 0.0
        self._last_sent_confirmed = -1
        self._drain_deadline: float | None = None
        self._watch = watch
        sink.on_wait = self._while_waiting

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Stream until stopped, then make what was published durable and confirm it.

        Raises:
            CdcError: the stream, the decoder, a conversion or Kafka failed.
        """
        try:
            self._stream()
        except Stopped:
            self._log.warning(
                "stopped_while_waiting_for_kafka",
                detail="what was not durable yet is sent again on restart",
            )
        self._finish()

    def _stream(self) -> None:
        source = self._source
        sink = self._sink
        router = self._router
        read = source.read
        split = split_xlog_data
        decode = self._decoder.decode
        feed = router.feed
        publish = sink.publish
        stop = self._stop
        time_ns = time.time_ns
        countdown = HOUSEKEEPING_EVERY
        while True:
            if stop.is_set() and self._may_stop():
                return
            data = read()
            if data is None:
                self._housekeeping(idle_boundary=not router.in_transaction)
                # Not durable yet: wake soon to see acks and confirm promptly; otherwise
                # sleep until the server sends something.
                source.wait(ACK_WAIT_S if sink.pending else IDLE_WAIT_S)
                continue
            xlog = split(data)
            if xlog is None:  # a keepalive (or a malformed message, which this raises on)
                message = parse_copy_data(data)
                if isinstance(message, PrimaryKeepalive):
                    self._keepalive(message)
                    continue
                xlog = (message.wal_start, message.wal_end, bytes(message.data))
            lsn, self.server_wal_end, payload = xlog
            if lsn > self.received:  # noqa: PLR1730 - hot path: cheaper than a max() call
                self.received = lsn
            msg = decode(payload)
            if msg.__class__ is Relation:
                router.relation(msg, self._relation_info(msg))
                continue
            for effect in feed(msg, lsn, time_ns() // 1000):
                kind = effect.__class__
                if kind is Publish:
                    publish(effect.records, effect.reached)  # type: ignore[union-attr]
                elif kind is SourceCommit:
                    sink.end_group(
                        end_lsn=effect.end_lsn,  # type: ignore[union-attr]
                        commit_ts_us=effect.commit_ts_us,  # type: ignore[union-attr]
                        reached=effect.reached,  # type: ignore[union-attr]
                    )
                elif kind is SaveState:
                    sink.save_state(effect.key, effect.value)  # type: ignore[union-attr]
                else:
                    self._handle(effect)
            countdown -= 1
            if countdown <= 0:
                countdown = HOUSEKEEPING_EVERY
                self._housekeeping(idle_boundary=False)

    def _keepalive(self, message: PrimaryKeepalive) -> None:
        self.server_wal_end = message.wal_end
        if not self._router.in_transaction:
            self._sink.keepalive(message.wal_end)
        if message.reply_requested:
            self._send_status(force=True)

    def _may_stop(self) -> bool:
        """A stop was requested: leave now, or first finish the source transaction in
        hand (``at_least_once``: its records are then all confirmed, so a restart
        repeats nothing), within ``drain_timeout``."""
        if self._sink.exactly_once or not self._router.in_transaction or abandoned(self._stop):
            return True
        now = time.monotonic()
        if self._drain_deadline is None:
            self._drain_deadline = now + self._timings.drain_timeout_s
            self._log.info("stop_after_transaction", lsn=format_lsn(self.received))
            return False
        if now < self._drain_deadline:
            return False
        self._log.warning(
            "stopped_mid_transaction",
            lsn=format_lsn(self.received),
            detail=f"the transaction did not end within {self._timings.drain_timeout_s:.0f}s;"
            " its records are sent again on restart",
        )
        return True

    def _while_waiting(self) -> None:
        """Called by the sink while it waits for Kafka: the slot keeps hearing from us,
        and a stop ends the wait (``at_least_once``: after the drain timeout)."""
        self._send_status(force=False, heartbeat=True)
        if self._watch is not None:
            self._watch()
        if self._stop.is_set() and self._may_stop():
            raise Stopped

    def _housekeeping(self, *, idle_boundary: bool) -> None:
        sink = self._sink
        sink.service(idle_boundary=idle_boundary)
        self._drain_latency()
        self._periodic()
        self._send_status(force=False)

    # --- the slot -----------------------------------------------------------------------

    def _send_status(self, *, force: bool, heartbeat: bool = False) -> None:
        """Tell the slot what is durable: at once when ``force``, else at most once a
        second when the confirmed LSN moved (or, with ``heartbeat``, anyway), and at least
        every ``status_interval_s``."""
        now = time.monotonic()
        confirmed = self._sink.confirmed
        elapsed = now - self._last_status
        if not force and elapsed < CONFIRM_INTERVAL_S:
            return
        if (
            not force
            and not heartbeat
            and confirmed == self._last_sent_confirmed
            and elapsed < self._timings.status_interval_s
        ):
            return
        if self._durable is not None:
            # What the TOAST memory keeps must be durable before the slot is confirmed
            # past it: the stream before the confirmed LSN is never sent again.
            durable = Position(confirmed, 0)
            stored = self._sink.durable
            self._durable(stored if stored is not None and stored > durable else durable)
        written = max(self.received, confirmed)
        self._source.send(
            encode_standby_status(
                written, confirmed, confirmed, unix_us_to_pg_us(time.time_ns() // 1000)
            )
        )
        self._last_status = now
        self._last_sent_confirmed = confirmed

    # --- the end ------------------------------------------------------------------------

    def _finish(self) -> None:
        """Make what was published durable (commit, or wait for acknowledgements) and
        confirm it, so a restart repeats nothing. Abandoned (a fleet lost this connector:
        another instance may own it already): neither, the new owner resumes from what
        Kafka durably holds."""
        sink = self._sink
        if abandoned(self._stop):
            sink.abandon()
            self._log.warning(
                "streaming_abandoned",
                lsn=format_lsn(sink.confirmed),
                detail="nothing more was committed or confirmed; the new owner resumes",
            )
            return
        sink.on_wait = self._heartbeat  # stopping already: only keep the slot informed
        sink.finish(self._timings.shutdown_timeout_s)
        self._drain_latency()
        self._send_status(force=True)
        self._log.info(
            "streaming_stopped",
            lsn=format_lsn(sink.confirmed),
            events=dict(self._router.events),
        )

    def _drain_latency(self) -> None:
        """Source transactions that became durable since the last call: their latency."""
        completed = self._sink.completed
        if completed:
            self._observe_latency(completed)
            completed.clear()

    def _heartbeat(self) -> None:
        self._send_status(force=False, heartbeat=True)
