"""Settings: one frozen, validated tree loaded from TOML, then PCHAT_* env, then flags (HS-6)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

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
    # Per-connection output cap: a client that stops reading is cut off past it, so one
    # reader cannot hold the worker's memory (about 500 posts of 500 bytes).
    max_output_bytes: int = 256 * 1024
    auth_algorithms: list[str] = msgspec.field(default_factory=lambda: ["MD5", "SHA-256"])
    trusted_hosts: list[str] = msgspec.field(default_factory=list)  # P-Asserted-Identity peers
    unauth_timeout_s: float = 30.0  # a connection that does not sign in within this is closed
    tls_port: OptionalPort = (
        -1
    )  # SIP over TLS (5061 is usual); -1: no TLS listener; 0: any free port
    tls_cert: str = ""  # PEM certificate chain for the TLS listener
    tls_key: str = ""  # PEM private key for the TLS listener


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "0.0.0.0"
    port: OptionalPort = 8080  # 0: pick a free port (tests); -1: no HTTP listener
    public_url: str = ""  # what clients are told (getservinfo); "": http://<host>:<port>


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    message_size_limit: int = 8000  # characters of one post (rpl:getservinfo messageSizeLimit)
    story_size_limit: int = 32000
    search_limit: int = 100  # most rooms one chansrch returns
    history_max: int = 500  # most messages one bccontext returns (cnt 1..500)
    # Items (commands, posts) per XCCOS envelope; more: 413. Each item takes a loop turn.
    envelope_items: int = 16
    # Admission: INFOs accepted but not yet answered, per worker. Over it the edge says 503:
    # about 0.2 s of work at 10k commands/s, so the queue never hides an overload.
    admission_queue: int = 2000
    retry_after_s: int = 1  # Retry-After on 503
    participant_update_limit: int = 75  # above it: no per-user join/part traffic
    recent_ring: int = 200  # posts per room kept in memory for bccontext last/after
    newcontent_interval_s: float = 5.0  # at most one ntc:newcontent per room and session


class ComplianceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The optional compliance service (off by default, as in the original)."""

    enabled: bool = False  # on: every join, part, post and history read is recorded first
    store: str = ""  # compliance store (SQLite file); "": <data_dir>/compliance.db
    output_dir: str = ""  # where adapters write; "": <data_dir>/compliance
    adapters: list[str] = msgspec.field(default_factory=lambda: ["xml"])  # xml, jsonl, entry points
    run_interval_s: int = 900  # adapters run this often: 60 s to 30 days
    xml_file_per_room: bool = False  # XML adapter: one file per room instead of one per run
    xml_room_details: bool = True  # XML adapter: add the room's name to each Channel
    xml_user_details: bool = False  # XML adapter: add display names to each Sender
    lease_ttl_s: float = 10.0  # one active service per pool: a Redis lease of this length


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    domain: str = "example.com"
    data_dir: str = "./data"
    store: str = ""  # chat store URL; "": sqlite:///<data_dir>/chat.db
    redis_url: str = ""  # "": the supervisor starts an embedded redis-server in data_dir
    workers: int = 1  # worker processes; 0: one per CPU
    shards: int = 1024  # virtual shards: crc32(room_uri) % shards
    log_level: str = "INFO"
    sip: SipSettings = msgspec.field(default_factory=SipSettings)
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    compliance: ComplianceSettings = msgspec.field(default_factory=ComplianceSettings)

    @property
    def compliance_store_path(self) -> str:
        return self.compliance.store or str(Path(self.data_dir).resolve() / "compliance.db")

    @property
    def compliance_output_dir(self) -> str:
        return self.compliance.output_dir or str(Path(self.data_dir).resolve() / "compliance")

    @property
    def store_url(self) -> str:
        if self.store:
            return self.store
        return f"sqlite://{Path(self.data_dir).resolve() / 'chat.db'}"  # sqlite:///abs/path

    @property
    def pool_uri(self) -> str:
        return f"sip:pchat@{self.domain}"

    @property
    def redis_socket(self) -> str:
        """Where the embedded redis-server listens (a unix socket in the data directory)."""
        return str(Path(self.data_dir).resolve() / "redis.sock")

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
    {"PCHAT_CONFIG", "PCHAT_PASSWORD", "PCHAT_TEST_LOOP", "PCHAT_TEST_POSTGRES"}
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
    interval = settings.compliance.run_interval_s
    if not 60 <= interval <= 30 * 86400:
        raise ConfigError(f"compliance.run_interval_s must be 60 s to 30 days; got {interval}")
    unknown = [a for a in settings.sip.auth_algorithms if a not in DIGEST_ALGORITHMS]
    if unknown or not settings.sip.auth_algorithms:
        raise ConfigError(
            f"sip.auth_algorithms must be a non-empty list of {', '.join(DIGEST_ALGORITHMS)}; "
            f"got {settings.sip.auth_algorithms}"
        )
    return settings
