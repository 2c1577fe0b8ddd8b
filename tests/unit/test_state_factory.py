"""Tests of the state-store URL parsing."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from triggerd.state.factory import create_state_store, sqlite_path
from triggerd.state.pgschema import DEFAULT_POOL_SIZE, parse_url, redact_state_url
from triggerd.state.postgres import PostgresStateStore
from triggerd.state.sqlite import SQLiteStateStore
from triggerd.types import ConfigError


def test_three_slashes_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///var/state.db") == str(tmp_path / "var" / "state.db")


def test_four_slashes_is_absolute() -> None:
    assert sqlite_path("sqlite:////var/lib/triggerd/state.db") == "/var/lib/triggerd/state.db"


def test_plain_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "/home/someone")
    assert sqlite_path("/abs/state.db") == "/abs/state.db"
    assert sqlite_path("rel/state.db") == str(tmp_path / "rel" / "state.db")
    assert sqlite_path("~/state.db") == "/home/someone/state.db"


def test_memory_urls() -> None:
    assert sqlite_path("sqlite://") == ":memory:"
    assert sqlite_path("sqlite:///:memory:") == ":memory:"


def test_scheme_is_case_insensitive() -> None:
    assert sqlite_path("SQLite:////x/state.db") == "/x/state.db"


def test_create_state_store_returns_an_unopened_sqlite_store(tmp_path: Path) -> None:
    store = create_state_store(f"sqlite:///{tmp_path}/state.db")
    assert isinstance(store, SQLiteStateStore)
    assert store.path == os.path.join(str(tmp_path), "state.db")
    assert not (tmp_path / "state.db").exists()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://admin:s3cr3t-pw@db.example:5432/triggerd",
        "postgres://u:s3cr3t-pw@h/d",
        "postgresql+asyncpg://u:s3cr3t-pw@h/d?sslmode=require&pool_size=8",
    ],
)
def test_postgresql_urls_give_a_postgres_store_that_never_shows_the_password(url: str) -> None:
    store = create_state_store(url)
    assert isinstance(store, PostgresStateStore)
    assert "s3cr3t-pw" not in store.display
    assert "s3cr3t-pw" not in repr(store)
    assert store.display.startswith("postgresql://u") or "admin@db.example:5432" in store.display


def test_the_pool_size_is_parsed_out_of_the_url_and_the_rest_goes_to_asyncpg() -> None:
    url = parse_url("postgres://u:pw@h:5433/d?pool_size=8&sslmode=require")
    assert url.pool_size == 8
    assert url.dsn == "postgresql://u:pw@h:5433/d?sslmode=require"
    assert url.display == "postgresql://u@h:5433/d"
    assert parse_url("postgresql://h/d").pool_size == DEFAULT_POOL_SIZE


@pytest.mark.parametrize("value", ["1", "101", "x", ""])
def test_a_bad_pool_size_is_a_config_error_without_the_password(value: str) -> None:
    with pytest.raises(ConfigError, match="pool_size") as info:
        create_state_store(f"postgresql://u:s3cr3t-pw@h/d?pool_size={value}")
    assert "s3cr3t-pw" not in str(info.value)


def test_a_postgresql_url_without_asyncpg_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "asyncpg" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"install triggerd-daemon\[postgres\]") as info:
        create_state_store("postgresql://u:s3cr3t-pw@h/d")
    assert "s3cr3t-pw" not in str(info.value)


def test_sqlite_path_refuses_a_postgresql_url() -> None:
    with pytest.raises(ConfigError, match="PostgreSQL store, not an SQLite file"):
        sqlite_path("postgresql://u:s3cr3t-pw@h/d")


def test_unknown_scheme_names_the_supported_ones_and_hides_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        create_state_store("mysql://root:s3cr3t-pw@localhost/triggerd")
    message = str(info.value)
    assert "'mysql'" in message
    assert "sqlite:///" in message
    assert "s3cr3t-pw" not in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("sqlite://host/state.db", "no host"),
        ("sqlite:///state.db?timeout=5", "no query"),
        ("sqlite:///", "names no file"),
    ],
)
def test_malformed_urls_raise_config_error(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        create_state_store(url)


def test_a_state_url_is_shown_without_its_password() -> None:
    assert redact_state_url("postgresql://u:s3cr3t-pw@h:5432/d?sslpassword=x") == (
        "postgresql://u@h:5432/d"
    )
    assert "s3cr3t-pw" not in redact_state_url("postgres://u:s3cr3t-pw@h/d?pool_size=0")
    assert redact_state_url("sqlite:///state.db") == "sqlite:///state.db"
