"""Unit tests for core/config.py: file, then PCHAT_* env, then flags, validated once (HS-6)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from core.config import (
    DEFAULT_CONFIG_FILES,
    ConfigError,
    Settings,
    find_config_file,
    load_settings,
    redact_url,
)
from core.store.registry import sqlite_path


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pchat.toml"
    path.write_text(text)
    return str(path)


# -- defaults


def test_defaults_without_file_env_or_flags() -> None:
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.domain == "example.com"
    assert settings.workers == 1
    assert settings.shards == 1024
    assert settings.sip.port == 5041
    assert settings.sip.auth_algorithms == ["MD5", "SHA-256"]
    assert settings.http.port == 8080
    assert settings.limits.participant_update_limit == 75


def test_empty_store_means_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(env={"PCHAT_DATA_DIR": str(tmp_path)})
    path = tmp_path.resolve() / "chat.db"
    assert settings.store_url == f"sqlite://{path}"  # sqlite:/// and an absolute path
    assert sqlite_path(settings.store_url) == str(path)
    assert load_settings(env={"PCHAT_STORE": "sqlite:///x.db"}).store_url == "sqlite:///x.db"


def test_settings_are_frozen() -> None:
    settings = load_settings(env={})
    with pytest.raises(AttributeError):
        settings.domain = "changed.example"  # type: ignore[misc]


# -- TOML file


def test_toml_file_sets_top_level_and_nested_keys(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'domain = "chat.example.org"\nshards = 64\n'
        '[sip]\nport = 5061\ntrusted_hosts = ["10.0.0.1"]\n'
        "[limits]\nhistory_max = 50\n",
    )
    settings = load_settings(path, env={})
    assert settings.domain == "chat.example.org"
    assert settings.shards == 64
    assert settings.sip.port == 5061
    assert settings.sip.trusted_hosts == ["10.0.0.1"]
    assert settings.sip.host == "0.0.0.0"  # untouched keys of a table keep their defaults
    assert settings.limits.history_max == 50
    assert settings.limits.search_limit == 100


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        load_settings(str(tmp_path / "nope.toml"), env={})


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pchat.toml"):
        load_settings(_toml(tmp_path, "domain = \n"), env={})


def test_wrong_type_in_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(_toml(tmp_path, '[sip]\nport = "high"\n'), env={})


# -- PCHAT_* environment


def test_env_sets_top_level_keys() -> None:
    settings = load_settings(env={"PCHAT_DOMAIN": "example.org", "PCHAT_LOG_LEVEL": "DEBUG"})
    assert settings.domain == "example.org"
    assert settings.log_level == "DEBUG"


def test_env_double_underscore_nests() -> None:
    settings = load_settings(
        env={"PCHAT_SIP__PORT": "5060", "PCHAT_LIMITS__PARTICIPANT_UPDATE_LIMIT": "10"}
    )
    assert settings.sip.port == 5060
    assert settings.limits.participant_update_limit == 10
    assert settings.http.port == 8080


@pytest.mark.parametrize(
    ("var", "raw", "path", "expected"),
    [
        pytest.param("PCHAT_SIP__PORT", "5060", ("sip", "port"), 5060, id="int"),
        pytest.param(
            "PCHAT_SIP__UNAUTH_TIMEOUT_S", "2.5", ("sip", "unauth_timeout_s"), 2.5, id="float"
        ),
        pytest.param(
            "PCHAT_SIP__TRUSTED_HOSTS",
            '["10.0.0.1", "10.0.0.2"]',
            ("sip", "trusted_hosts"),
            ["10.0.0.1", "10.0.0.2"],
            id="list",
        ),
        pytest.param("PCHAT_DOMAIN", '"quoted.example"', ("domain",), "quoted.example", id="str"),
        pytest.param("PCHAT_SIP__HOST", "127.0.0.1", ("sip", "host"), "127.0.0.1", id="bare-ip"),
        pytest.param("PCHAT_SIP__HOST", "::1", ("sip", "host"), "::1", id="bare-ipv6"),
        pytest.param(
            "PCHAT_REDIS_URL",
            "unix:///run/pchat/redis.sock",
            ("redis_url",),
            "unix:///run/pchat/redis.sock",
            id="url",
        ),
    ],
)
def test_env_values_convert_to_the_field_type(
    var: str, raw: str, path: tuple[str, ...], expected: object
) -> None:
    node: object = load_settings(env={var: raw})
    for name in path:
        node = getattr(node, name)
    assert node == expected
    assert type(node) is type(expected)


def test_env_text_that_is_no_number_is_rejected_for_a_number() -> None:
    with pytest.raises(ConfigError, match=r"sip\.port"):
        load_settings(env={"PCHAT_SIP__PORT": "true"})


def test_env_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match="workers"):
        load_settings(env={"PCHAT_WORKERS": "many"})


def test_env_ignores_other_variables() -> None:
    settings = load_settings(
        env={"HOME": "/root", "pchat_domain": "lower.example", "XPCHAT_X": "1"}
    )
    assert settings == Settings()


def test_explicit_env_replaces_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PCHAT_DOMAIN", "from-os.example")
    assert load_settings(env={}).domain == "example.com"


def test_os_environ_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("PCHAT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PCHAT_DOMAIN", "from-os.example")
    monkeypatch.setenv("PCHAT_SIP__PORT", "6000")
    settings = load_settings()
    assert settings.domain == "from-os.example"
    assert settings.sip.port == 6000


def test_pchat_config_names_the_file_not_a_setting(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'domain = "file.example"\n')
    assert load_settings(path, env={"PCHAT_CONFIG": path}).domain == "file.example"


@pytest.mark.parametrize("var", ["PCHAT_PASSWORD", "PCHAT_TEST_LOOP", "PCHAT_TEST_POSTGRES"])
def test_pchat_variables_of_the_client_and_tests_are_not_settings(var: str) -> None:
    # `pchat chat` reads PCHAT_PASSWORD, the test suite PCHAT_TEST_*: with them set in the
    # same shell, loading the settings must still work.
    assert load_settings(env={var: "x"}) == Settings()


@pytest.mark.parametrize(
    ("var", "raw", "attr", "expected"),
    [
        pytest.param("PCHAT_DATA_DIR", "2024", "data_dir", "2024", id="int-like"),
        pytest.param("PCHAT_DOMAIN", "1e3", "domain", "1e3", id="float-like"),
        pytest.param("PCHAT_STORE", "true", "store", "true", id="bool-like"),
    ],
)
def test_env_value_of_a_string_setting_stays_text(
    var: str, raw: str, attr: str, expected: str
) -> None:
    assert getattr(load_settings(env={var: raw}), attr) == expected


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"PCHAT_SIP": "1", "PCHAT_SIP__PORT": "5060"}, id="value-then-table"),
        pytest.param({"PCHAT_SIP__PORT": "5060", "PCHAT_SIP": "1"}, id="table-then-value"),
    ],
)
def test_scalar_and_table_for_one_key_is_a_config_error(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="sip"):
        load_settings(env=env)


def test_flag_into_a_scalar_from_the_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sip"):
        load_settings(_toml(tmp_path, "sip = 5060\n"), env={}, overrides={"sip.port": 1})


# -- precedence: flags over env over file


def test_env_wins_over_file_and_flags_win_over_env(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'domain = "file.example"\nlog_level = "WARNING"\nshards = 64\n'
        '[sip]\nport = 1111\nhost = "10.0.0.9"\n',
    )
    env = {"PCHAT_DOMAIN": "env.example", "PCHAT_LOG_LEVEL": "ERROR", "PCHAT_SIP__PORT": "2222"}
    settings = load_settings(path, env=env, overrides={"domain": "flag.example"})
    assert settings.domain == "flag.example"  # file < env < flag
    assert settings.log_level == "ERROR"  # file < env
    assert settings.sip.port == 2222  # file < env, nested
    assert settings.sip.host == "10.0.0.9"  # env merged into the [sip] table, not replacing it
    assert settings.shards == 64  # file only


def test_nested_flag_override_wins_and_keeps_siblings(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[sip]\nport = 1111\nhost = "10.0.0.9"\n')
    settings = load_settings(
        path, env={"PCHAT_SIP__PORT": "2222"}, overrides={"sip.port": 3333, "http.port": 0}
    )
    assert settings.sip.port == 3333
    assert settings.sip.host == "10.0.0.9"
    assert settings.http.port == 0


def test_none_flags_do_not_override(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'domain = "file.example"\n')
    settings = load_settings(
        path, env={"PCHAT_SIP__PORT": "2222"}, overrides={"domain": None, "sip.port": None}
    )
    assert settings.domain == "file.example"
    assert settings.sip.port == 2222


def test_falsy_flags_do_override() -> None:
    settings = load_settings(env={"PCHAT_SIP__PORT": "2222"}, overrides={"sip.port": 0})
    assert settings.sip.port == 0


# -- unknown keys


@pytest.mark.parametrize(
    ("text", "key"),
    [
        pytest.param("bogus = 1\n", "bogus", id="top-level"),
        pytest.param("[sip]\nprot = 5060\n", "prot", id="nested"),
        pytest.param("[nosuch]\nx = 1\n", "nosuch", id="table"),
        pytest.param('config = "other.toml"\n', "config", id="config-key"),
    ],
)
def test_unknown_key_in_file_is_rejected(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"`{key}`"):
        load_settings(_toml(tmp_path, text), env={})


def test_unknown_nested_key_names_its_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_toml(tmp_path, "[limits]\nhistroy_max = 5\n"), env={})
    assert "histroy_max" in str(info.value)
    assert "limits" in str(info.value)


def test_unknown_key_in_env_is_rejected() -> None:
    with pytest.raises(ConfigError, match="`prot`"):
        load_settings(env={"PCHAT_SIP__PROT": "5060"})
    with pytest.raises(ConfigError, match="`bogus`"):
        load_settings(env={"PCHAT_BOGUS": "1"})


def test_unknown_key_in_flags_is_rejected() -> None:
    with pytest.raises(ConfigError, match="`nope`"):
        load_settings(env={}, overrides={"limits.nope": 1})


# -- workers and shards


def test_workers_zero_means_one_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert load_settings(env={"PCHAT_WORKERS": "0"}).workers == 6


def test_workers_zero_without_a_cpu_count_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert load_settings(env={}, overrides={"workers": 0}).workers == 1


def test_workers_zero_cannot_exceed_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    with pytest.raises(ConfigError, match="shards"):
        load_settings(env={"PCHAT_WORKERS": "0", "PCHAT_SHARDS": "8"})


@pytest.mark.parametrize(
    ("workers", "shards"),
    [
        pytest.param(-1, 1024, id="negative-workers"),
        pytest.param(4, 2, id="fewer-shards-than-workers"),
        pytest.param(1, 0, id="no-shards"),
        pytest.param(1, -5, id="negative-shards"),
    ],
)
def test_bad_workers_or_shards(workers: int, shards: int) -> None:
    with pytest.raises(ConfigError, match="workers"):
        load_settings(env={}, overrides={"workers": workers, "shards": shards})


@pytest.mark.parametrize(("workers", "shards"), [(1, 1), (4, 4), (8, 1024)])
def test_good_workers_and_shards(workers: int, shards: int) -> None:
    settings = load_settings(env={}, overrides={"workers": workers, "shards": shards})
    assert (settings.workers, settings.shards) == (workers, shards)


def test_result_round_trips_through_msgspec() -> None:
    """The supervisor hands Settings to workers as JSON: what load_settings returns must survive."""
    settings = load_settings(env={"PCHAT_SIP__PORT": "5060", "PCHAT_DOMAIN": "example.org"})
    assert msgspec.json.decode(msgspec.json.encode(settings), type=Settings) == settings


# -- a pool of hosts and the chat store's connection pool (issue #14)


def test_pool_defaults_are_one_host_and_one_to_four_connections() -> None:
    settings = load_settings(env={})
    assert settings.pool_hosts == 1
    assert settings.store_pool == (1, 4)


def test_pool_sizes_come_from_env() -> None:
    env = {"PCHAT_STORE_POOL_MIN": "0", "PCHAT_STORE_POOL_MAX": "9"}
    assert load_settings(env=env).store_pool == (0, 9)


@pytest.mark.parametrize("low, high", [(-1, 4), (1, 0), (5, 4)])
def test_bad_pool_sizes_are_rejected(low: int, high: int) -> None:
    env = {"PCHAT_STORE_POOL_MIN": str(low), "PCHAT_STORE_POOL_MAX": str(high)}
    with pytest.raises(ConfigError, match="store_pool_min"):
        load_settings(env=env)


def test_pool_hosts_below_one_is_rejected() -> None:
    with pytest.raises(ConfigError, match="pool_hosts must be >= 1"):
        load_settings(env={"PCHAT_POOL_HOSTS": "0"})


@pytest.mark.parametrize("store", ["", "sqlite:///srv/chat.db", "SQLite:rel/chat.db"])
def test_several_hosts_on_sqlite_are_refused(store: str) -> None:
    with pytest.raises(ConfigError, match="pool_hosts = 3 needs a shared PostgreSQL store"):
        load_settings(env={"PCHAT_POOL_HOSTS": "3", "PCHAT_STORE": store})


def test_several_hosts_on_postgres_are_accepted() -> None:
    env = {"PCHAT_POOL_HOSTS": "3", "PCHAT_STORE": "postgresql://u@db/pchat"}
    assert load_settings(env=env).pool_hosts == 3


def test_one_host_on_sqlite_is_accepted() -> None:
    assert load_settings(env={"PCHAT_POOL_HOSTS": "1"}).pool_hosts == 1


def test_redact_url_hides_passwords_only() -> None:
    assert redact_url("redis://:hunter2@10.0.0.1:6379/0") == "redis://:***@10.0.0.1:6379/0"
    assert (
        redact_url("postgresql://chat:p%40ss@db.example:5432/pchat")
        == "postgresql://chat:***@db.example:5432/pchat"
    )
    assert (
        redact_url("rediss://user:pw@h/1?ssl_cert_reqs=none")
        == "rediss://user:***@h/1?ssl_cert_reqs=none"
    )
    for plain in ("unix:///tmp/x/redis.sock", "sqlite:///data/chat.db", "postgresql://u@h/db"):
        assert redact_url(plain) == plain


def test_log_level_is_a_logging_level() -> None:
    assert load_settings(env={"PCHAT_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    with pytest.raises(ConfigError, match="log_level must be one of DEBUG, INFO"):
        load_settings(env={"PCHAT_LOG_LEVEL": "LOUD"})


# -- the compliance store: SQLite file or PostgreSQL URL, its pool (issue #14, point 4)


def test_compliance_store_is_a_path_or_a_url(tmp_path: Path) -> None:
    default = load_settings(env={"PCHAT_DATA_DIR": str(tmp_path)})
    assert default.compliance_store_url == f"sqlite://{tmp_path.resolve() / 'compliance.db'}"
    assert default.compliance_store_pool == (1, 2)
    path = load_settings(env={"PCHAT_COMPLIANCE__STORE": str(tmp_path / "c.db")})
    assert path.compliance_store_url == f"sqlite://{tmp_path.resolve() / 'c.db'}"
    url = "postgresql://u@db/pchat"
    assert load_settings(env={"PCHAT_COMPLIANCE__STORE": url}).compliance_store_url == url


@pytest.mark.parametrize(("low", "high"), [(-1, 2), (0, 0), (3, 2)])
def test_bad_compliance_pool_sizes_are_rejected(low: int, high: int) -> None:
    env = {
        "PCHAT_COMPLIANCE__STORE_POOL_MIN": str(low),
        "PCHAT_COMPLIANCE__STORE_POOL_MAX": str(high),
    }
    with pytest.raises(ConfigError, match="compliance.store_pool_min"):
        load_settings(env=env)


def test_a_pool_with_compliance_refuses_an_sqlite_compliance_store() -> None:
    env = {
        "PCHAT_POOL_HOSTS": "2",
        "PCHAT_STORE": "postgresql://u@db/pchat",
        "PCHAT_COMPLIANCE__ENABLED": "true",
    }
    with pytest.raises(ConfigError, match="needs a shared PostgreSQL compliance store"):
        load_settings(env=env)
    env["PCHAT_COMPLIANCE__STORE"] = "postgresql://u@db/pchat"
    assert load_settings(env=env).compliance_store_url == "postgresql://u@db/pchat"
    del env["PCHAT_COMPLIANCE__ENABLED"]  # compliance off: its store is never opened
    assert load_settings(env={**env, "PCHAT_COMPLIANCE__STORE": ""}).pool_hosts == 2


def test_config_file_is_the_flag_then_pchat_config_then_the_first_default_that_exists(
    tmp_path: Path,
) -> None:
    system, local = tmp_path / "etc-pchat.toml", tmp_path / "pchat.toml"
    defaults = (str(system), str(local))
    assert find_config_file(None, {}, defaults) is None  # none exists: no file
    local.write_text("")
    assert find_config_file(None, {}, defaults) == str(local)
    system.write_text("")
    assert find_config_file(None, {}, defaults) == str(system)
    assert find_config_file(None, {"PCHAT_CONFIG": "/x.toml"}, defaults) == "/x.toml"
    assert find_config_file("/y.toml", {"PCHAT_CONFIG": "/x.toml"}, defaults) == "/y.toml"
    assert find_config_file(None, {"PCHAT_CONFIG": ""}, defaults) == str(system)


def test_the_default_config_files_are_the_systems_then_the_current_directorys() -> None:
    assert DEFAULT_CONFIG_FILES == ("/etc/pchat/pchat.toml", "pchat.toml")


def test_lease_settings_from_env_and_their_bounds() -> None:
    settings = load_settings(env={"PCHAT_LEASES__HOST_ID": "3", "PCHAT_WORKERS": "2"})
    assert settings.leases.host_id == 3
    assert settings.leased  # two workers: shards are leased
    assert not load_settings(env={}).leased  # one worker of one host holds every shard
    for env, word in (
        ({"PCHAT_LEASES__HOST_ID": "-1"}, "host_id"),
        ({"PCHAT_LEASES__TTL_S": "0.5", "PCHAT_LEASES__RENEW_S": "0.5"}, "ttl_s"),
        ({"PCHAT_LEASES__RENEW_S": "0"}, "renew_s"),
        ({"PCHAT_LEASES__HANDOVER_BATCH": "0"}, "handover_batch"),
        ({"PCHAT_WORKERS": "1001", "PCHAT_SHARDS": "2048"}, "at most 1000"),
    ):
        with pytest.raises(ConfigError, match=word):
            load_settings(env=env)


def test_a_redis_cluster_is_chosen_by_env_with_its_seeds() -> None:
    settings = load_settings(
        env={
            "PCHAT_REDIS_URL": "redis://10.0.0.1:6379",
            "PCHAT_REDIS_CLUSTER": "true",
            "PCHAT_REDIS_CLUSTER_SEEDS": '["redis://10.0.0.2:6379"]',
        }
    )
    assert settings.redis_cluster is True
    assert settings.redis_cluster_seeds == ["redis://10.0.0.2:6379"]


@pytest.mark.parametrize(
    ("url", "seeds"),
    [
        pytest.param("", [], id="embedded"),
        pytest.param("unix:///run/redis.sock", [], id="unix"),
        pytest.param("redis://10.0.0.1:6379", ["10.0.0.2:6379"], id="seed-without-scheme"),
    ],
)
def test_a_redis_cluster_needs_tcp_nodes(url: str, seeds: list[str]) -> None:
    with pytest.raises(ConfigError, match="redis_cluster needs"):
        load_settings(
            overrides={"redis_url": url, "redis_cluster": True, "redis_cluster_seeds": seeds}
        )


def test_websocket_settings_load_from_env_and_an_unbounded_output_is_refused() -> None:
    settings = load_settings(env={"PCHAT_WEBSOCKET__IDLE_TIMEOUT_S": "30"})
    assert settings.websocket.idle_timeout_s == 30.0
    with pytest.raises(ConfigError, match="websocket.max_output_bytes"):
        load_settings(env={"PCHAT_WEBSOCKET__MAX_OUTPUT_BYTES": "0"})


# -- the file service (files.service_*)


def test_the_file_service_runs_with_workers_http_and_a_port() -> None:
    env = {"PCHAT_FILES__SERVICE_PORT": "8091", "PCHAT_WORKERS": "2"}
    settings = load_settings(env=env)
    assert settings.files.service_port == 8091 and settings.files.service_nice == 10
    assert settings.file_service
    assert not load_settings(env={**env, "PCHAT_WORKERS": "1"}).file_service  # no bus
    assert not load_settings(env={**env, "PCHAT_HTTP__PORT": "-1"}).file_service
    assert not load_settings(env={**env, "PCHAT_FILES__SERVICE_PORT": "-1"}).file_service
    tuned = load_settings(
        env={
            **env,
            "PCHAT_FILES__SERVICE_NICE": "0",
            "PCHAT_FILES__SERVICE_PUBLIC_URL": "https://f",
        }
    )
    assert (tuned.files.service_nice, tuned.files.service_public_url) == (0, "https://f")


@pytest.mark.parametrize(
    "env",
    [
        {"PCHAT_FILES__SERVICE_PORT": "-2"},
        {"PCHAT_FILES__SERVICE_PORT": "70000"},
        {"PCHAT_FILES__SERVICE_NICE": "20"},
        {"PCHAT_FILES__SERVICE_NICE": "-1"},
        {"PCHAT_FILES__SERVICE_PORT": "8080"},  # the HTTP port's default
        {"PCHAT_FILES__SERVICE_PUBLIC_URL": "files.example.com"},
    ],
)
def test_bad_file_service_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"files\.service"):
        load_settings(env=env)
