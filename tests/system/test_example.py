"""The bundled example (`make run`), run as a subprocess from a copy on free ports: what the
README says it does, it does. Its directory trigger counts the shipped inbox file and then a
new one, removes the derived file when the source goes; its webhook answers a POSTed body's
counts, the body reaching the function as text or base64-encoded by its content type as from
API Gateway, and refuses what its route does not take without invoking; SIGTERM drains and
exits 0."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.system.conftest import Daemon, free_port, wait_for

pytestmark = pytest.mark.system

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_copy(tmp: Path) -> tuple[str, int]:
    """The example's functions and inbox copied under `tmp`, and its config with both
    listeners moved to free ports (the example's 9070/9071 may be taken)."""
    shutil.copytree(EXAMPLES / "functions", tmp / "functions")
    shutil.copytree(EXAMPLES / "inbox", tmp / "inbox")
    port = free_port()
    text = (EXAMPLES / "triggerd.toml").read_text()
    text, listens = re.subn(r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"', text)
    text, controls = re.subn(
        r"(?m)^control_listen = .*$", f'control_listen = "127.0.0.1:{free_port()}"', text
    )
    assert (listens, controls) == (1, 1), "the example's listen lines moved"
    return text, port


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    return _send(req)


def _send(req: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, _lower(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), exc.read()


def _lower(items: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in items}


def counts_of(data: bytes) -> dict[str, int]:
    text = data.decode("utf-8", errors="replace")
    return {"lines": text.count("\n"), "words": len(text.split()), "bytes": len(data)}


def derived(tmp: Path, name: str) -> dict[str, Any] | None:
    try:
        parsed: dict[str, Any] = json.loads((tmp / "out" / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    return parsed


def count_invocations(d: Daemon) -> int:
    return sum(
        1
        for e in d.events()
        if e.get("function") == "count" and str(e.get("event", "")).startswith("START ")
    )


def test_bundled_example_counts_files_and_posted_bodies(
    tmp_path: Path, daemon_factory: Any
) -> None:
    config, port = example_copy(tmp_path)
    d: Daemon = daemon_factory(config)
    d.start()

    # The shipped inbox file is delivered on the first start (TRIM_HORIZON).
    shipped = (tmp_path / "inbox" / "hello.txt").read_bytes()
    wait_for(lambda: derived(tmp_path, "hello.txt") is not None, 60, "out/hello.txt.json")
    first = derived(tmp_path, "hello.txt")
    assert first is not None
    assert {k: first[k] for k in ("lines", "words", "bytes")} == counts_of(shipped)

    url = f"http://127.0.0.1:{port}/count"
    text = b"the quick brown fox\njumps over\nthe lazy dog\n"
    status, headers, body = post(url, text, "text/plain")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert {k: answer[k] for k in ("lines", "words", "bytes")} == counts_of(text)
    assert re.fullmatch(r"[0-9a-f-]{36}", answer["request_id"])
    assert answer["base64"] is False

    # A content type API Gateway does not take for text: the body reaches the function
    # base64-encoded, valid UTF-8 or not, and its bytes are counted as sent.
    for binary in (b"plain words, binary type", b"\x00\x01 ab cd\xff\xfe"):
        status, _, body = post(url, binary, "application/octet-stream")
        assert status == 200, body
        answer = json.loads(body)
        assert (answer["bytes"], answer["base64"]) == (len(binary), True)
    # Under a text type, a body that is not UTF-8 is base64-encoded too.
    status, _, body = post(url, b"caf\xe9", "text/plain")
    assert status == 200, body
    assert (json.loads(body)["bytes"], json.loads(body)["base64"]) == (4, True)

    # What the route does not take is refused by the daemon, the function never invoked: the
    # log holds one START for each request the function had once a later one's is written.
    wait_for(lambda: count_invocations(d) == 4, 10, "the four invocations' START lines")
    status, _, _ = _send(urllib.request.Request(url, method="GET"))
    assert status == 405
    status, _, body = post(url, b"x" * (1024 * 1024 + 1), "text/plain")
    assert status == 413, body
    assert json.loads(body) == {"message": "Request Too Long"}
    status, _, _ = post(f"http://127.0.0.1:{port}/counts", text, "text/plain")
    assert status == 404
    status, _, body = post(url, b"", "text/plain")
    assert status == 200, body
    assert json.loads(body)["bytes"] == 0
    wait_for(lambda: count_invocations(d) >= 5, 10, "the fifth invocation's START line")
    assert count_invocations(d) == 5

    # A file dropped in the inbox is counted; deleting it removes the derived file.
    dropped = b"one two three\n"
    (tmp_path / "inbox" / "new.txt").write_bytes(dropped)
    wait_for(lambda: derived(tmp_path, "new.txt") is not None, 30, "out/new.txt.json")
    made = derived(tmp_path, "new.txt")
    assert made is not None
    assert made["words"] == 3
    (tmp_path / "inbox" / "new.txt").unlink()
    wait_for(lambda: derived(tmp_path, "new.txt") is None, 30, "out/new.txt.json removed")
    assert derived(tmp_path, "hello.txt") is not None

    assert d.terminate() == 0
