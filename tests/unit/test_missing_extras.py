"""`triggerd validate` names the extra a used connector needs when its client library is
missing, from the installed distribution's metadata."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

from triggerd.cli.main import main
from triggerd.config import plugins
from triggerd.config.plugins import missing_extra

REAL_VERSION = importlib.metadata.version
REAL_DISTRIBUTION = importlib.metadata.distribution


def without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Both ways of asking: whether a distribution is there, and its version."""

    def version(name: str) -> str:
        if name.lower() in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return REAL_VERSION(name)

    def distribution(name: str) -> importlib.metadata.Distribution:
        if name.lower() in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return REAL_DISTRIBUTION(name)

    monkeypatch.setattr(plugins.importlib.metadata, "version", version)
    monkeypatch.setattr(plugins.importlib.metadata, "distribution", distribution)


def test_an_extra_whose_packages_are_installed_is_not_missing() -> None:
    assert missing_extra("sqs") is None
    assert missing_extra("all") is None  # an extra of extras is not checked for itself
    assert missing_extra("local") is None  # no such extra: the core has it


def test_a_missing_package_names_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without(monkeypatch, "aiobotocore")
    assert missing_extra("sqs") == "pip install 'triggerd-daemon[sqs]'"
    assert missing_extra("kafka") is None


def test_validate_reports_each_used_connector_whose_extra_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "fn").mkdir()
    config = tmp_path / "t.toml"
    config.write_text(
        """
[functions.f]
handler = "app.handler"
code = "fn"

[[triggers]]
name = "q"
function = "f"
source = { type = "sqs", queue_url = "http://localhost:1/123456789012/q", region = "us-east-1" }
maximum_retry_attempts = 2
on_failure = { type = "kafka", bootstrap_servers = "localhost:1", topic = "dlq" }
"""
    )
    without(monkeypatch, "aiobotocore", "aiokafka")
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "triggers.q.source: the sqs source is not installed: pip install " in result.output
    assert "'triggerd-daemon[sqs]'" in result.output
    assert "triggers.q.on_failure: the kafka destination is not installed" in result.output
    assert "Traceback" not in result.output


def test_validate_names_the_otel_extra_when_tracing_is_configured_without_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[telemetry.otel]\nendpoint = "http://127.0.0.1:4318/v1/traces"\n')
    without(monkeypatch, "opentelemetry-sdk")
    result = CliRunner().invoke(main, ["validate", str(config)])
    assert result.exit_code == 2, result.output
    assert "telemetry.otel: the otel tracing is not installed: pip install " in result.output
    assert "'triggerd-daemon[otel]'" in result.output


def test_extras_are_checked_from_one_read_of_the_metadata_and_no_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`validate` asks for each extra a config uses: triggerd's requirement lines are read
    once, and an installed distribution is found, not parsed for its version."""
    reads: list[str] = []

    def distribution(name: str) -> importlib.metadata.Distribution:
        # The distribution's own reads counted, whatever its class: once the
        # importlib_metadata backport is imported (opentelemetry-sdk at its floor does), the
        # standard library's lookup returns the backport's PathDistribution.
        found = REAL_DISTRIBUTION(name)
        real_read = found.read_text

        def read_text(filename: str) -> str | None:
            reads.append(filename)
            return real_read(filename)

        found.read_text = read_text  # type: ignore[method-assign]
        return found

    def version(name: str) -> str:
        raise AssertionError(f"version({name!r}) read")

    def requires(name: str) -> list[str] | None:
        raise AssertionError(f"requires({name!r}) parsed the whole METADATA file")

    plugins._requirements.cache_clear()
    monkeypatch.setattr(plugins.importlib.metadata, "distribution", distribution)
    monkeypatch.setattr(plugins.importlib.metadata, "requires", requires)
    monkeypatch.setattr(plugins.importlib.metadata, "version", version)
    try:
        assert [missing_extra(e) for e in ("sqs", "kafka", "directory")] == [None] * 3
    finally:
        plugins._requirements.cache_clear()
    # Once: a wheel's .dist-info has METADATA, a source tree's .egg-info PKG-INFO.
    assert reads in (["METADATA"], ["METADATA", "PKG-INFO"])


def test_the_requirement_lines_are_those_importlib_metadata_reads() -> None:
    plugins._requirements.cache_clear()
    try:
        assert plugins._requirements(plugins.DIST) == tuple(
            importlib.metadata.requires(plugins.DIST) or ()
        )
    finally:
        plugins._requirements.cache_clear()


def installed_metadata(
    monkeypatch: pytest.MonkeyPatch, site: Path, kind: str, files: dict[str, str]
) -> None:
    """triggerd's metadata as another install leaves it, first on sys.path: a wheel's
    .dist-info, or an .egg-info (a source checkout's `setup.py develop`, an old setuptools)."""
    info = site / f"triggerd_daemon-0.1.0.{kind}"
    info.mkdir(parents=True)
    for name, text in files.items():
        (info / name).write_text(text)
    monkeypatch.syspath_prepend(str(site))
    plugins._requirements.cache_clear()


HEADER = "Metadata-Version: 2.1\nName: triggerd-daemon\nVersion: 0.1.0\n"


@pytest.mark.parametrize(
    ("kind", "files"),
    [
        # A wheel's METADATA; the description below the header names a requirement too.
        (
            "dist-info",
            {
                "METADATA": HEADER + "Requires-Dist: click>=8\n"
                'Requires-Dist: acme-missing-client>=1; extra == "sqs"\n'
                'Requires-Dist: click>=8; extra == "kafka"\n'
                '\n# triggerd\n\nRequires-Dist: acme-missing-client; extra == "kafka"\n'
            },
        ),
        # An .egg-info whose PKG-INFO has no requirement lines: requires.txt has them.
        (
            "egg-info",
            {
                "PKG-INFO": HEADER + "\nThe description.\n",
                "requires.txt": "click>=8\n\n[sqs]\nacme-missing-client>=1\n\n[kafka]\nclick>=8\n",
            },
        ),
    ],
)
def test_the_requirement_lines_of_each_kind_of_install_are_those_importlib_metadata_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, files: dict[str, str]
) -> None:
    installed_metadata(monkeypatch, tmp_path / "site", kind, files)
    try:
        lines = plugins._requirements(plugins.DIST)
        assert lines == tuple(importlib.metadata.requires(plugins.DIST) or ())
        assert len(lines or ()) == 3
        assert missing_extra("sqs") == "pip install 'triggerd-daemon[sqs]'"
        assert missing_extra("kafka") is None  # the description's line is not a requirement
    finally:
        plugins._requirements.cache_clear()
