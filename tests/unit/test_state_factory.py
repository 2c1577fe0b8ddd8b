"""Tests of the state-store URL parsing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from triggerd.state.factory import create_state_store, sqlite_path
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
        "postgresql+asyncpg://u:s3cr3t-pw@h/d",
    ],
)
def test_postgresql_is_not_available_yet_and_hides_the_password(url: str) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL state store is not available yet") as info:
        create_state_store(url)
    assert "s3cr3t-pw" not in str(info.value)


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
