"""Every Prometheus metric pchat exports, defined once (HS-16), children bound at start.

Names follow ``pchat_<subsystem>_<what>_<unit>``. Under the supervisor the workers run
in prometheus-client multiprocess mode (PROMETHEUS_MULTIPROC_DIR), so one ``/metrics``
on any worker shows the whole host.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Latency buckets from 0.5 ms to 10 s: post-to-delivery targets are 5 ms and 100 ms.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

COMMAND_LATENCY = Histogram(
    "pchat_xccos_command_latency_seconds",
    "XCCOS command latency, INFO in to reply out",
    ["command"],
    buckets=LATENCY_BUCKETS,
)
DELIVERY_LATENCY = Histogram(
    "pchat_fanout_delivery_latency_seconds",
    "Post accepted by its room owner to handed to a recipient's connection",
    buckets=LATENCY_BUCKETS,
)
POSTS = Counter("pchat_rooms_posts_total", "Posts stored")
DELIVERIES = Counter("pchat_fanout_deliveries_total", "Posts handed to recipients' connections")
REJECTED = Counter("pchat_admission_rejected_total", "Requests answered 503, by reason", ["reason"])
INFLIGHT = Gauge(
    "pchat_admission_queue_depth",
    "INFOs admitted and not yet answered",
    multiprocess_mode="livesum",
)
COMMIT_QUEUE = Gauge(
    "pchat_store_commit_queue_depth",
    "Posts waiting for their group commit",
    multiprocess_mode="livesum",
)
SESSIONS = Gauge("pchat_gateway_sessions", "Signed-in sessions", multiprocess_mode="livesum")
ACTIVE_ROOMS = Gauge(
    "pchat_rooms_active_rooms", "Rooms with participants online", multiprocess_mode="livesum"
)
COMMIT_SECONDS = Histogram(
    "pchat_store_commit_seconds", "Time of one group commit", buckets=LATENCY_BUCKETS
)
COMMIT_BATCH = Histogram(
    "pchat_store_commit_batch_size_posts", "Posts per group commit", buckets=BATCH_BUCKETS
)
SLOW_CONSUMERS = Counter(
    "pchat_sip_slow_consumer_disconnects_total", "Connections cut off at their output cap"
)
CONNECTIONS_REFUSED = Counter(
    "pchat_worker_connections_refused_total",
    "Unauthenticated connections closed at once over a cap, by cap (total, address)",
    ["cap"],
)
SIP_REQUESTS = Counter("pchat_sip_requests_total", "SIP requests received, by method", ["method"])
SIP_ERRORS = Counter("pchat_sip_errors_total", "SIP error responses sent, by status", ["status"])
REDIS_PUBLISH = Histogram(
    "pchat_redis_publish_seconds", "Time of one Redis publish", buckets=LATENCY_BUCKETS
)
# Event-loop lag: how late a timer fires. Every request on a worker waits behind the loop,
# so this is the floor of every latency there; buckets from 1 ms (a healthy turn) to 10 s.
LOOP_LAG = Histogram(
    "pchat_worker_loop_lag_seconds",
    "How late a periodic timer fires on a worker's event loop",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
)
WORKER_RESTARTS = Counter("pchat_supervisor_worker_restarts_total", "Workers restarted")
COMPLIANCE_BACKLOG = Gauge(
    "pchat_compliance_backlog_events",
    "Activity events not yet archived (outbox + compliance store)",
    multiprocess_mode="max",
)
COMPLIANCE_BACKLOG_AGE = Gauge(
    "pchat_compliance_backlog_age_seconds",
    "Age of the oldest activity event not yet archived",
    multiprocess_mode="max",
)
COMPLIANCE_OUTBOX = Gauge(
    "pchat_compliance_outbox_events",
    "Activity events in the chat store's outbox, not yet moved to the compliance store",
    multiprocess_mode="max",
)
COMPLIANCE_FAILURES = Counter(
    "pchat_compliance_adapter_failures_total", "Failed adapter runs, by adapter", ["adapter"]
)
COMPLIANCE_RELAYED = Counter(
    "pchat_compliance_relayed_events_total", "Events moved from the outbox to the compliance store"
)
COMPLIANCE_ARCHIVED = Counter(
    "pchat_compliance_archived_events_total", "Events written by every adapter and deleted"
)
FILES_SWEPT = Counter(
    "pchat_files_swept_total",
    "Files left by crashes and removed by a sweep, by folder (uploads, compliance)",
    ["store"],
)


class Metrics:
    """The handles the hot paths use, with label children bound once (HS-10)."""

    def __init__(self) -> None:
        self.sessions = SESSIONS
        self.inflight = INFLIGHT
        self.commit_queue = COMMIT_QUEUE
        self.active_rooms = ACTIVE_ROOMS
        self.slow_consumers = SLOW_CONSUMERS
        self._rejected = {
            r: REJECTED.labels(r)
            for r in ("admission", "session", "owner", "redis", "commit", "delivery")
        }
        self._refused = {c: CONNECTIONS_REFUSED.labels(c) for c in ("total", "address")}
        self._commands: dict[str, Histogram] = {}
        self._methods: dict[str, Counter] = {}
        self._statuses: dict[int, Counter] = {}

    def rejected(self, reason: str) -> None:
        child = self._rejected.get(reason)
        if child is None:
            child = self._rejected[reason] = REJECTED.labels(reason)
        child.inc()

    def connection_refused(self, cap: str) -> None:
        self._refused[cap].inc()  # a fixed label set: "total" or "address"

    def command(self, name: str, seconds: float) -> None:
        child = self._commands.get(name)
        if child is None:
            child = self._commands[name] = COMMAND_LATENCY.labels(name)
        child.observe(seconds)

    def request(self, method: str) -> None:
        child = self._methods.get(method)
        if child is None:
            child = self._methods[method] = SIP_REQUESTS.labels(method)
        child.inc()

    def error(self, status: int) -> None:
        child = self._statuses.get(status)
        if child is None:
            child = self._statuses[status] = SIP_ERRORS.labels(str(status))
        child.inc()

    def delivered(self, count: int, latency_s: float) -> None:
        DELIVERIES.inc(count)
        DELIVERY_LATENCY.observe(latency_s)

    def loop_lag(self, seconds: float) -> None:
        LOOP_LAG.observe(seconds)

    def redis_published(self, seconds: float) -> None:
        REDIS_PUBLISH.observe(seconds)

    def observe_commit(self, seconds: float, size: int) -> None:
        POSTS.inc(size)
        COMMIT_SECONDS.observe(seconds)
        COMMIT_BATCH.observe(size)


def render() -> bytes:
    """The exposition text: the whole host in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
