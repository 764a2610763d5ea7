"""Settings: one frozen, validated tree loaded from TOML, then PCHAT_* env, then flags (HS-6)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from core.files.registry import BACKENDS as FILE_BACKENDS
from core.sip.digest import ALGORITHMS as DIGEST_ALGORITHMS

# A TCP port; out of range is refused at load time, not by a worker's bind (issue 11 point 2).
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
OptionalPort = Annotated[int, msgspec.Meta(ge=-1, le=65535)]  # -1: that listener is off


class SipSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    port: Port = 5041  # 0: pick a free port (tests)
    max_header_bytes: int = 16 * 1024  # XCCOS.md §1: header block limit
    max_body_bytes: int = 64 * 1024  # XCCOS.md §1: body limit; larger bodies get 413
    session_expires_s: int = 1800  # INVITE session lifetime unless refreshed (UPDATE/re-INVITE)
    # A session not refreshed within Session-Expires plus this is ended with BYE: the
    # client refreshes at half the interval (RFC 4028 §10), so 32 s (the SIP transaction
    # timeout) forgives a refresh that was slow, never a client that stopped. 0: none.
    session_grace_s: float = 32.0
    # A signed-in connection that holds no session (never INVITEd, or BYE'd them all) is
    # closed after this: sign-in is cheap to repeat, and the connection holds a descriptor
    # and a sign-in without anything to refresh it. 0: kept until the client closes it.
    sessionless_timeout_s: float = 300.0
    # Per-connection output cap: a client that stops reading is cut off past it, so one
    # reader cannot hold the worker's memory (about 500 posts of 500 bytes).
    max_output_bytes: int = 256 * 1024
    auth_algorithms: list[str] = msgspec.field(default_factory=lambda: ["MD5", "SHA-256"])
    trusted_hosts: list[str] = msgspec.field(default_factory=list)  # P-Asserted-Identity peers
    unauth_timeout_s: float = 30.0  # a connection that does not sign in within this is closed
    # SIP over TLS (5061 is usual); -1: no TLS listener; 0: any free port
    tls_port: OptionalPort = -1
    tls_cert: str = ""  # PEM certificate chain for the TLS listener
    tls_key: str = ""  # PEM private key for the TLS listener
    # A TLS client must finish its handshake within this, or it is closed: without it a
    # connection that never says hello held a descriptor for >= 45 s. 0: asyncio's 60 s.
    tls_handshake_timeout_s: float = 10.0


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"  # listen address ("127.0.0.1" keeps the API on this host)
    port: OptionalPort = 8080  # 0: pick a free port (tests); -1: no HTTP listener
    public_url: str = ""  # what clients are told (getservinfo); "": http(s)://<host>:<port>
    # An idle keep-alive connection is closed after this. aiohttp's default (3,630 s) let
    # idle clients hold the worker's descriptors; a browser or script reconnects in one
    # round trip. Must be > 0 (aiohttp treats 0 as "never time out").
    keepalive_timeout_s: float = 15.0
    tls_cert: str = ""  # PEM certificate chain: HTTPS on this listener; "": plain HTTP
    tls_key: str = ""  # PEM private key; needed with tls_cert (the same options as sip.tls_*)
    tls_handshake_timeout_s: float = 10.0  # as sip.tls_handshake_timeout_s; 0: asyncio's 60 s
    # Browser origins (scheme://host[:port]) besides the listener's own and public_url's that
    # may change things; a request with any other Origin header gets 403 (CSRF). [] : none.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    # A page sign-in (the session cookie) lasts this long, then the user signs in again: a
    # working day. The cookie is signed, not stored, so this is also how long a copied
    # cookie stays good after its owner signs out (a password change ends it at once).
    session_ttl_s: Annotated[float, msgspec.Meta(gt=0)] = 8 * 3600.0
    # The key that signs session cookies (created 0600 on first start). "": <data_dir>/
    # web-session.key. The hosts of a pool must share one file (or copies of it).
    session_key_file: str = ""


class WebSocketSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The browser chat client's WebSocket (GET /ws, docs/websocket.md)."""

    enabled: bool = True  # False: no /ws route (and no /chat page)
    # Largest frame a browser may send: a post of message_size_limit characters, 4 bytes
    # each, fits; past it the connection closes with 1009 (message too big). 0: aiohttp's 4 MiB.
    max_message_bytes: int = 64 * 1024
    # Per-connection output cap, as sip.max_output_bytes: a browser tab that stops reading
    # is cut off past it instead of holding the worker's memory. Must be > 0.
    max_output_bytes: int = 256 * 1024
    # No request (the page pings every idle_timeout_s / 3) within this: closed with 4000.
    # Also bounds how long a dead tab holds its session. 0: never.
    idle_timeout_s: float = 90.0
    # WebSocket ping interval; a peer that does not answer within it is closed (aiohttp's
    # heartbeat). 0: no pings.
    heartbeat_s: float = 30.0


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The password-guess throttle, one for SIP and HTTP sign-ins (core/auth/throttle.py)."""

    # A user who mistypes a few times, or an office behind one NAT where several do, is
    # never slowed; the probe asks for about ten per minute. 0: every attempt delayed.
    free_attempts: int = 10
    window_s: float = 60.0  # a key untouched this long starts again from zero
    base_delay_s: float = 1.0  # the first delay: about one checked attempt per second
    max_delay_s: float = 16.0  # the cap: below a SIP client's 32 s transaction timeout
    # Keys (users plus addresses) remembered at once, about 100 bytes each: 1 MB. Past it
    # the least recently seen is forgotten, so a flood of addresses cannot grow the table,
    # and a key under attack is touched by every attempt, so it stays. 0: no throttle.
    max_keys: int = 10_000


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    message_size_limit: int = 8000  # characters of one post (rpl:getservinfo messageSizeLimit)
    story_size_limit: int = 32000
    search_limit: int = 100  # most rooms one chansrch returns
    # A chansrch with empty criteria is the whole room list (SIPE's "chat list"): every room
    # the user may see, up to one reply's bytes (about 300 rooms at the default output cap).
    # The rooms read from the store for it, before visibility: a bound on its memory and
    # store time (about 1 KB each). 0: search_limit, as any other search.
    room_list_max: int = 5000
    history_max: int = 500  # most messages one bccontext returns (cnt 1..500)
    # Items (commands, posts) per XCCOS envelope; more: 413. Each item takes a loop turn.
    envelope_items: int = 16
    # Admission: INFOs accepted but not yet answered, per worker. Over it the edge says 503:
    # about 0.2 s of work at 10k commands/s, so the queue never hides an overload.
    admission_queue: int = 2000
    retry_after_s: int = 1  # Retry-After on 503
    participant_update_limit: int = 75  # above it: no per-user join/part traffic
    # Quotas (issue 10 #7); over each the request gets 403 or 413 with the reason. 0: no cap.
    # Sessions one user holds on one worker: phone, laptop, web client and spares. A user's
    # sign-ins may land on every worker, so the pool-wide bound is this times the workers.
    sessions_per_user: int = 16
    # Sessions (INVITE dialogs) on one connection: a client opens one; two cover a re-INVITE
    # race, more is a client multiplying its share of the worker.
    sessions_per_connection: int = 4
    # Rooms one session is in at once: each is a roster place at the owner and maybe a room
    # channel on Redis; heavy Lync users sit in a few hundred.
    joins_per_session: int = 1000
    pref_label_chars: int = 256  # a setpref label longer than this: 413
    # setpref content, decoded: Lync keeps small XML blobs there; 32 KiB fits one SIP body.
    pref_content_bytes: int = 32 * 1024
    # Invitations one room change may create (new members while invitations are on): each
    # is a row and a notice to every worker; a bigger change is refused, made in steps.
    invitations_per_change: int = 1000
    recent_ring: int = 200  # posts per room kept in memory for bccontext last/after
    newcontent_interval_s: float = 5.0  # at most one ntc:newcontent per room and session
    # Connections not signed in (SIP before its sign-in, every HTTP connection), per worker.
    # Over a cap a new one is accepted and closed at once. The total is further held to half
    # the descriptor limit, so signed-in users and /healthz keep the other half. 0: that
    # half only. 512 covers a whole office signing in at 9:00 within unauth_timeout_s.
    unauth_connections: int = 512
    # Per source address: well below the total, so one host cannot take every place; a NAT
    # of a few hundred users signs in over minutes, not all at once. 0: no per-address cap.
    unauth_per_address: int = 64


class FileSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The room file store (HTTP upload and download; bytes on disk, metadata in the store)."""

    backend: str = "directory"  # core/files/registry.py: where the bytes live
    # The directory backend's directory; "": <data_dir>/files. A pool's hosts point it at
    # one shared directory, so a file uploaded through any host is served by every host.
    dir: str = ""
    # Largest upload, in KB: the original's default of 20,000 KB; past it 413. 0: no uploads.
    max_upload_kb: int = 20_000
    # Bytes read from the socket and written to disk at once: bounds a transfer's memory.
    chunk_bytes: int = 64 * 1024
    # File transfers (uploads and downloads) in flight on one worker; past it 503 with
    # Retry-After (core/files/places.py). Each takes loop turns and a thread-pool hop per
    # chunk from the chat the worker serves, so the cap bounds files' share of a worker
    # whatever the number of clients; 4: two clients each uploading and downloading at
    # once. Memory: at most 4 × chunk_bytes of file data per worker.
    max_transfers: int = 4
    # Upload bytes per second one worker takes in, in KB/s, shared by its uploads; 0: no
    # cap. On a small host where uploads compete with chat for the CPUs (the hash, the
    # copies, the disk), a cap bounds their share; downloads are not paced.
    upload_kb_s: int = 0
    # Bytes all files of one room may hold, in KB; an upload past it gets 507 (the room is
    # full, the file itself may be fine). 1,000,000 KB: fifty uploads at the size cap. 0: none.
    room_quota_kb: int = 1_000_000
    # How long a file-service token handed out in rpl:getservinfo signs its user in over
    # HTTP: long enough for a client to start an upload, short enough that a leaked URL
    # or log line is soon useless. The client asks again when it has expired.
    token_ttl_s: int = 600
    # The token's HMAC secret (created mode 0600 on first start); "": <data_dir>/file-token.key.
    # A pool's hosts share one file here, so a token from one host is good on every host.
    token_key_file: str = ""
    # The file service (shards/file_service.py): a separate, niced process that carries the
    # file bytes, so that uploads and downloads do not take the chat workers' loops. It runs
    # when more than one worker shares the host (its file posts reach the room's owner over
    # the Redis bus) and HTTP is on; the workers' file routes then answer 307 to it (a
    # browser signed in by the session cookie is still served by the worker). Its port;
    # -1: no service, the workers serve files themselves; 0: any free port (tests).
    service_port: int = -1
    # Its niceness (os.nice, 0 to 19) below the workers': under load the chat goes first.
    # 0: the same priority as the workers.
    service_nice: int = 10
    # The base URL clients are told for the service (file posts' links, fileServiceUrl);
    # "": http(s)://<http host>:<service_port>. Set it behind a proxy or NAT.
    service_public_url: str = ""


class ComplianceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The optional compliance service (off by default, as in the original)."""

    enabled: bool = False  # on: every join, part, post and history read is recorded first
    # The compliance store: an SQLite file path or sqlite:/// URL (one host), or a
    # postgresql:// URL (a pool of hosts; it may be the chat store's database: its tables
    # are prefixed compliance_). "": <data_dir>/compliance.db
    store: str = ""
    # PostgreSQL connections of the compliance service (one process per host, one active):
    # the relay and the adapter run take one each. Ignored on SQLite.
    store_pool_min: int = 1  # kept open from the start; 0: open on first use
    store_pool_max: int = 2  # at most this many at once; must be >= 1 and >= store_pool_min
    # The compliance file store: copies of uploaded files, kept until every adapter has
    # archived their FILEUPLOAD event. "": <data_dir>/compliance-files. A pool shares it.
    files_dir: str = ""
    output_dir: str = ""  # where adapters write; "": <data_dir>/compliance
    adapters: list[str] = msgspec.field(default_factory=lambda: ["xml"])  # xml, jsonl, entry points
    run_interval_s: int = 900  # adapters run this often: 60 s to 30 days
    xml_file_per_room: bool = False  # XML adapter: one file per room instead of one per run
    xml_room_details: bool = True  # XML adapter: add the room's name to each Channel
    xml_user_details: bool = False  # XML adapter: add display names to each Sender
    # XML adapter: for each file transfer a .ATTACH manifest in the output directory, and
    # each uploaded file's bytes beside it. False: the FILEUPLOAD/FILEDOWNLOAD messages only.
    xml_attach: bool = False
    lease_ttl_s: float = 10.0  # one active service per pool: a Redis lease of this length


class LogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Process logs (stderr, level: the top-level log_level), the HTTP access log, the audit
    log (docs/operations.md)."""

    # "text": one readable line per record; "json": one JSON object per line (time, level,
    # process, pid, logger, message, fields, exception) for a log collector.
    format: Literal["text", "json"] = "text"
    # One line per HTTP request (logger pchat.access): method, path, status, bytes, ms, peer,
    # user. Off by default: /healthz and /metrics polls would be most of the log, and the
    # metrics already count requests; on for an incident or an audit of the API's use.
    access: bool = False
    # Administrative changes (pchat admin and the HTTP API), one JSON object per line,
    # appended (logrotate may rename it: each record opens the file). "": <data_dir>/audit.log.
    audit_file: str = ""


MAX_WORKERS_PER_HOST = 1000  # a worker's pool-wide id is host_id * 1000 + its index


class LeaseSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shard ownership by leases in Redis (ARCHITECTURE §8); used whenever there is more
    than one worker in the pool (workers > 1 or pool_hosts > 1)."""

    # This host's number in the pool, unique per host: its workers are host_id * 1000 + i
    # on the bus, in rosters and in session ids. 0 for a single host.
    host_id: int = 0
    # How long a lease lives without renewal: a dead host's shards are taken this long
    # after its last renewal (plus one renew_s tick). 3 s keeps a takeover inside 5 s.
    # A worker trusts its leases for 80 % of it after a renewal, so one whose loop
    # stalls past that stops serving. Must be at least 2 x renew_s.
    ttl_s: float = 3.0
    # Each worker renews its leases, reads the pool's and hands shards over this often:
    # 0.5 s leaves a stalled loop 1.9 s before it must step down (two cores shared by
    # many processes stall for a second at times), at three Redis round trips a tick.
    renew_s: float = 0.5
    # Shards one worker hands over per tick when a host joins (or a restarted worker comes
    # back): bounded, so a join moves rooms in small steps instead of all at once.
    handover_batch: int = 64


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    domain: str = "example.com"
    data_dir: str = "./data"
    store: str = ""  # chat store URL; "": sqlite:///<data_dir>/chat.db
    # PostgreSQL connections per process (worker, compliance, admin). Posts are group-committed,
    # so one connection carries the hot path; the others let history, search and admin reads run
    # while a commit is in flight. 4 x workers x hosts must stay under the server's
    # max_connections (100 by default). Ignored on SQLite (one connection per process).
    store_pool_min: int = 1  # kept open from the start; 0: open on first use
    store_pool_max: int = 4  # at most this many at once; must be >= 1 and >= store_pool_min
    # How many hosts form the pool (issue #14). More than one needs a shared PostgreSQL store:
    # an SQLite file belongs to one host, so serve refuses to start with it.
    pool_hosts: int = 1
    redis_url: str = ""  # "": the supervisor starts an embedded redis-server in data_dir
    # true: redis_url is one node of a Redis Cluster (Redis 7+); the bus learns the others
    # from it and puts every channel on the master that serves its slot (sharded pub/sub,
    # SPUBLISH/SSUBSCRIBE). false: redis_url is one Redis (or the embedded one).
    redis_cluster: bool = False
    # More cluster nodes (URLs like redis_url) to start from when redis_url's node is down;
    # []: redis_url only. Used with redis_cluster only.
    redis_cluster_seeds: list[str] = msgspec.field(default_factory=list)
    workers: int = 1  # worker processes; 0: one per CPU
    # Net allocations between the garbage collector's youngest passes in a worker (Python's
    # default: 700). A sign-in burst allocates many short-lived objects, and each young pass,
    # with the older passes it sets off, walks a heap of thousands of sessions while the loop
    # waits: in signin-storm the collector took ~7 % of a worker (py-spy --native) at 700.
    # The worker also freezes what start-up built (gc.freeze), so no pass walks it again.
    # bench/README.md ("signin") has the A/B. 0: Python's defaults, nothing frozen.
    gc_gen0_threshold: int = 20_000
    shards: int = 1024  # virtual shards: crc32(room_uri) % shards
    log_level: str = "INFO"
    sip: SipSettings = msgspec.field(default_factory=SipSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    compliance: ComplianceSettings = msgspec.field(default_factory=ComplianceSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    files: FileSettings = msgspec.field(default_factory=FileSettings)
    leases: LeaseSettings = msgspec.field(default_factory=LeaseSettings)
    log: LogSettings = msgspec.field(default_factory=LogSettings)

    @property
    def audit_file(self) -> str:
        return self.log.audit_file or str(Path(self.data_dir).resolve() / "audit.log")

    websocket: WebSocketSettings = msgspec.field(default_factory=WebSocketSettings)

    @property
    def files_dir(self) -> str:
        return self.files.dir or str(Path(self.data_dir).resolve() / "files")

    @property
    def file_token_key_path(self) -> str:
        return self.files.token_key_file or str(Path(self.data_dir).resolve() / "file-token.key")

    @property
    def session_key_path(self) -> str:
        return self.http.session_key_file or str(Path(self.data_dir).resolve() / "web-session.key")

    @property
    def compliance_store_url(self) -> str:
        """The compliance store's URL; a plain path is an SQLite file."""
        store = self.compliance.store or str(Path(self.data_dir).resolve() / "compliance.db")
        if store.partition(":")[0].lower() in ("sqlite", "postgresql", "postgres"):
            return store
        return f"sqlite://{Path(store).resolve()}"  # sqlite:///abs/path

    @property
    def compliance_store_pool(self) -> tuple[int, int]:
        return self.compliance.store_pool_min, self.compliance.store_pool_max

    @property
    def compliance_files_dir(self) -> str:
        return self.compliance.files_dir or str(Path(self.data_dir).resolve() / "compliance-files")

    @property
    def compliance_output_dir(self) -> str:
        return self.compliance.output_dir or str(Path(self.data_dir).resolve() / "compliance")

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return f"sqlite://{Path(self.data_dir).resolve() / 'chat.db'}"  # sqlite:///abs/path

    @property
    def store_pool(self) -> tuple[int, int]:
        """(min, max) connections of the chat store's PostgreSQL pool, per process."""
        return self.store_pool_min, self.store_pool_max

    @property
    def pool_uri(self) -> str:
        return f"sip:pchat@{self.domain}"

    @property
    def redis_socket(self) -> str:
        """Where the embedded redis-server listens (a unix socket in the data directory)."""
        return str(Path(self.data_dir).resolve() / "redis.sock")

    @property
    def file_service(self) -> bool:
        """The file service runs (files.service_port): with HTTP on and a bus (leases) to
        reach the rooms' owners; one worker serves its files itself."""
        return self.files.service_port >= 0 and self.http.port >= 0 and self.leased

    @property
    def leased(self) -> bool:
        """Shards are leased (more than one worker in the pool) rather than all local."""
        return self.workers > 1 or self.pool_hosts > 1

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{part} is a value, so {dotted} cannot be set")
    if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
        raise ConfigError(f"{dotted} is a section, not a value")
    node[leaf] = value


# PCHAT_* variables that are not settings: the config file's path, the chat client's
# password, the test suite's switches.
NOT_SETTINGS = frozenset(
    {
        "PCHAT_CONFIG",
        "PCHAT_PASSWORD",
        "PCHAT_TEST_LOOP",
        "PCHAT_TEST_POSTGRES",
        "PCHAT_TEST_ARTIFACTS",  # where tests/browser/ keeps its screenshots
        "PCHAT_FUZZ_SEED",
        "PCHAT_FUZZ_CASES",
    }
)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """PCHAT_SIP__PORT=5060 sets sip.port; PCHAT_DOMAIN sets domain (double underscore nests)."""
    tree: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith("PCHAT_") or key in NOT_SETTINGS:
            continue
        dotted = key[len("PCHAT_") :].lower().replace("__", ".")
        _set_path(tree, dotted, _env_value(raw))
    return tree


def _env_value(raw: str) -> Any:
    """Lists, tables and quoted strings are TOML (PCHAT_SIP__AUTH_ALGORITHMS='["SHA-256"]');
    the rest stays a string, converted by the field's type: PCHAT_DATA_DIR=2024 is a path."""
    if raw.lstrip().startswith(("[", "{", '"', "'")):
        try:
            return tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            return raw
    return raw


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def redact_url(url: str) -> str:
    """The URL as it may be logged: a password becomes ``***`` (issue 10 finding 6).

    Every URL that reaches a log goes through here: a Redis or PostgreSQL password in a log
    file is a password anyone who reads the logs can use.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # the logging module's names


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


def _check_pool(settings: Settings) -> None:
    """Pool sizes make sense, and a pool of hosts shares a PostgreSQL store."""
    low, high = settings.store_pool
    if low < 0 or high < 1 or low > high:
        raise ConfigError(
            f"store_pool_min must be 0..store_pool_max and store_pool_max >= 1; got {low}, {high}"
        )
    if settings.pool_hosts < 1:
        raise ConfigError(f"pool_hosts must be >= 1; got {settings.pool_hosts}")
    if settings.pool_hosts > 1 and settings.store_url.partition(":")[0].lower() == "sqlite":
        raise ConfigError(
            f"pool_hosts = {settings.pool_hosts} needs a shared PostgreSQL store "
            "(store = postgresql://...); an SQLite store belongs to one host"
        )
    leases = settings.leases
    if not 0 <= leases.host_id < 2**31 // MAX_WORKERS_PER_HOST - 1:
        raise ConfigError(f"leases.host_id must be 0..2147482; got {leases.host_id}")
    if settings.workers > MAX_WORKERS_PER_HOST:
        raise ConfigError(f"workers must be at most {MAX_WORKERS_PER_HOST} per host")
    if leases.renew_s <= 0 or leases.ttl_s < 2 * leases.renew_s or leases.handover_batch < 1:
        raise ConfigError(
            "leases.renew_s must be > 0, leases.ttl_s >= 2 x leases.renew_s and "
            f"leases.handover_batch >= 1; got {leases.renew_s}, {leases.ttl_s}, "
            f"{leases.handover_batch}"
        )


def _check_compliance_store(settings: Settings) -> None:
    """The compliance store's pool makes sense, and a pool of hosts shares it."""
    low, high = settings.compliance_store_pool
    if low < 0 or high < 1 or low > high:
        raise ConfigError(
            "compliance.store_pool_min must be 0..compliance.store_pool_max and"
            f" compliance.store_pool_max >= 1; got {low}, {high}"
        )
    on_sqlite = settings.compliance_store_url.startswith("sqlite:")
    if settings.pool_hosts > 1 and settings.compliance.enabled and on_sqlite:
        raise ConfigError(
            f"pool_hosts = {settings.pool_hosts} with compliance needs a shared PostgreSQL"
            " compliance store (compliance.store = postgresql://...); an SQLite file belongs"
            " to one host"
        )


# Where a command looks for its TOML file when neither --config nor PCHAT_CONFIG names one:
# the system's file first, so `pchat admin` run from any directory finds the server's.
DEFAULT_CONFIG_FILES = ("/etc/pchat/pchat.toml", "pchat.toml")


def find_config_file(
    flag: str | None, env: Mapping[str, str], defaults: tuple[str, ...] = DEFAULT_CONFIG_FILES
) -> str | None:
    """The config file every command reads: --config, then PCHAT_CONFIG, then the first of
    ``defaults`` that exists (a relative one is in the current directory); None: none."""
    if flag:
        return flag
    if env.get("PCHAT_CONFIG"):
        return env["PCHAT_CONFIG"]
    return next((path for path in defaults if Path(path).is_file()), None)


def _check_redis(settings: Settings) -> None:
    if not settings.redis_cluster:
        return
    for url in [settings.redis_url, *settings.redis_cluster_seeds]:
        if urlsplit(url).scheme not in ("redis", "rediss"):
            raise ConfigError(
                "redis_cluster needs redis_url (and redis_cluster_seeds) to be redis:// or "
                f"rediss:// nodes of the cluster; got {redact_url(url)!r}"
            )


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Builds Settings from file, then env, then flag overrides (dotted keys), validating once."""
    tree: dict[str, Any] = {}
    if config_file:
        try:
            tree = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
    tree = _merge(tree, _env_overrides(os.environ if env is None else env))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, dotted, value)
    try:
        # strict=False: env and flag strings become the numbers and booleans fields expect
        settings = msgspec.convert(tree, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from exc
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(
            f"log_level must be one of {', '.join(LOG_LEVELS)}; got {settings.log_level!r}"
        )
    settings = msgspec.structs.replace(settings, log_level=settings.log_level.upper())
    if settings.workers == 0:
        settings = msgspec.structs.replace(settings, workers=os.cpu_count() or 1)
    if settings.workers < 1 or settings.shards < settings.workers:
        raise ConfigError("workers must be >= 1 and shards >= workers")
    if settings.sip.tls_port >= 0 and not (settings.sip.tls_cert and settings.sip.tls_key):
        raise ConfigError("sip.tls_port needs sip.tls_cert and sip.tls_key (PEM files)")
    if settings.websocket.max_output_bytes <= 0:
        raise ConfigError("websocket.max_output_bytes must be > 0")
    if settings.http.keepalive_timeout_s <= 0:
        raise ConfigError("http.keepalive_timeout_s must be > 0")
    if bool(settings.http.tls_cert) != bool(settings.http.tls_key):
        raise ConfigError("HTTPS needs both http.tls_cert and http.tls_key (PEM files)")
    if settings.files.max_upload_kb < 0 or not 4096 <= settings.files.chunk_bytes <= 1 << 20:
        raise ConfigError("files.max_upload_kb must be >= 0 and files.chunk_bytes 4 KiB to 1 MiB")
    if settings.files.backend not in FILE_BACKENDS:
        raise ConfigError(
            f"files.backend must be one of {', '.join(sorted(FILE_BACKENDS))};"
            f" got {settings.files.backend!r}"
        )
    if settings.files.max_transfers < 1 or settings.files.upload_kb_s < 0:
        raise ConfigError("files.max_transfers must be >= 1 and files.upload_kb_s >= 0")
    if settings.files.room_quota_kb < 0 or settings.files.token_ttl_s < 1:
        raise ConfigError("files.room_quota_kb must be >= 0 and files.token_ttl_s >= 1")
    if not -1 <= settings.files.service_port <= 65535 or not 0 <= settings.files.service_nice <= 19:
        raise ConfigError("files.service_port must be -1 to 65535 and files.service_nice 0 to 19")
    if settings.files.service_port > 0 and settings.files.service_port in (
        settings.http.port,
        settings.sip.port,
        settings.sip.tls_port,
    ):
        raise ConfigError("files.service_port must differ from the HTTP and SIP ports")
    service_url = settings.files.service_public_url
    if service_url and not service_url.startswith(("http://", "https://")):
        raise ConfigError("files.service_public_url must start with http:// or https://")
    interval = settings.compliance.run_interval_s
    if not 60 <= interval <= 30 * 86400:
        raise ConfigError(f"compliance.run_interval_s must be 60 s to 30 days; got {interval}")
    _check_pool(settings)
    _check_compliance_store(settings)
    _check_redis(settings)
    unknown = [a for a in settings.sip.auth_algorithms if a not in DIGEST_ALGORITHMS]
    if unknown or not settings.sip.auth_algorithms:
        raise ConfigError(
            f"sip.auth_algorithms must be a non-empty list of {', '.join(DIGEST_ALGORITHMS)}; "
            f"got {settings.sip.auth_algorithms}"
        )
    return settings
