"""The pytest plugin as users get it: a test suite of their own, run by pytest in a subprocess
(so the `pytest11` entry point loads it), invoking a handler through the real local backend
with a generated event, a recorded fixture and a config file, asserting on the response and
the log lines; the workers are gone after the run."""

from __future__ import annotations

import json
import os
import textwrap

import psutil
import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.integration

HANDLER = """
import json


def handler(event, context):
    print("got", len(event.get("Records", [])), "record(s)")
    if event.get("fail"):
        raise ValueError("asked to fail")
    keys = [r["s3"]["object"]["key"] for r in event.get("Records", [])]
    return {"keys": keys, "greeting": __import__("os").environ.get("GREETING")}
"""

USER_TESTS = """
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "inbox-0001.json"


def test_generated_event(triggerd_function):
    fn = triggerd_function(handler="app.handler", code="src", environment={"GREETING": "hi"})
    result = fn.invoke_sample("s3", key="photos/a.jpg")
    assert result.ok
    assert result.response == {"keys": ["photos/a.jpg"], "greeting": "hi"}
    assert result.logs[0].startswith("START RequestId: " + result.request_id)
    assert "got 1 record(s)" in result.logs
    assert result.logs[-2].startswith("END RequestId: ")
    assert result.logs[-1].startswith("REPORT RequestId: ")


def test_recorded_fixture_from_a_config(triggerd_function):
    fn = triggerd_function("wordcount", config="triggerd.toml")
    result = fn.invoke_fixture(FIXTURE)
    assert result.response["keys"] == ["notes/b.txt"]
    assert result.response["greeting"] == "from-config"


def test_function_error(triggerd_function):
    fn = triggerd_function(handler="app.handler", code="src")
    result = fn.invoke({"fail": True})
    assert not result.ok
    assert result.error == "Unhandled"
    assert result.response["errorType"] == "ValueError"
    assert "asked to fail" in result.output
"""


def test_plugin_through_pytester(pytester: pytest.Pytester) -> None:
    root = pytester.path
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text(HANDLER)
    (root / "fixtures").mkdir()
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "inbox"}, "object": {"key": "notes/b.txt"}},
            }
        ]
    }
    (root / "fixtures" / "inbox-0001.json").write_text(json.dumps(event))
    (root / "triggerd.toml").write_text(
        textwrap.dedent(
            """
            [functions.wordcount]
            handler = "app.handler"
            code = "src"
            environment = { GREETING = "from-config" }
            """
        )
    )
    pytester.makepyfile(test_handler=USER_TESTS)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    # A subprocess: the plugin is found through its entry point, as in a user's project.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before  # no worker outlived the run
    assert os.environ.get("TRIGGERD_RUNTIMES_DIR")  # the session's, shared with the run
