"""`triggerd record`'s parts: held settlement (acks held and given back as nacks at the end,
after receives paused; passed through where an ack changes nothing upstream), the capture
backend's count, fixture names, refusals and the config a recording runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from triggerd.config.load import validate_data
from triggerd.config.plugins import Registry
from triggerd.daemon.record import (
    CaptureBackend,
    HeldSettlement,
    Recorder,
    fixture_name,
    recorded_before,
    recording_config,
)
from triggerd.types import BaseSource, ConfigError, Outcome, Record, SourceConfig, SourcePlugin


class Fake(BaseSource):
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def receive(self, max_records: int, timeout_s: float) -> list[Record]:
        return []

    async def ack(self, records: Sequence[Record]) -> None:
        self.calls.append(("ack", [r.item_id for r in records]))

    async def nack(self, records: Sequence[Record]) -> None:
        self.calls.append(("nack", [r.item_id for r in records]))

    async def pause_receiving(self) -> None:
        self.calls.append(("pause", []))

    async def stop(self) -> None:
        self.calls.append(("stop", []))


def rec(item: str) -> Record:
    return Record(payload={}, item_id=item, size=2, created_at=0.0, failed=True)


async def test_acks_are_held_and_given_back_unfailed_at_stop() -> None:
    source = Fake()
    HeldSettlement(source, passes_acks=False)
    await source.ack([rec("a"), rec("b")])
    await source.nack([rec("c")])  # the pipeline's own nacks go through
    assert source.calls == [("nack", ["c"])]
    await source.stop()
    assert source.calls[1:] == [("pause", []), ("nack", ["a", "b"]), ("stop", [])]


async def test_acks_pass_through_where_they_change_nothing_upstream() -> None:
    source = Fake()
    HeldSettlement(source, passes_acks=True)
    await source.ack([rec("a")])
    await source.stop()
    assert source.calls == [("ack", ["a"]), ("stop", [])]


async def test_capture_writes_count_payloads_then_throttles(tmp_path: Path) -> None:
    recorder = Recorder("orders/eu", tmp_path, count=2)
    backend = CaptureBackend(recorder)
    results = [await backend.invoke(b'{"n": %d}' % i) for i in range(3)]
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.THROTTLED]
    assert recorder.done.is_set()
    assert [p.name for p in recorder.files] == ["orders_eu-0001.json", "orders_eu-0002.json"]
    assert (tmp_path / "orders_eu-0002.json").read_text() == '{\n  "n": 1\n}\n'


def test_fixture_names_are_safe() -> None:
    assert fixture_name("../x y", 12) == ".._x_y-0012.json"


class Unrecordable(SourceConfig):
    type: Literal["unrecordable"]
    invocation: ClassVar[Literal["sync", "async"]] = "sync"

    def record_refusal(self) -> str | None:
        return "reading it consumes the data"


def registry() -> Registry:
    reg = Registry.discover()
    reg.register("source", "unrecordable", SourcePlugin(Unrecordable, lambda c, x: Fake()))
    return reg


def config(tmp: Path, source: dict[str, object]) -> object:
    data = {
        "daemon": {"state": "sqlite:///s.db", "control_listen": "127.0.0.1:1"},
        "functions": {"f": {"handler": "app.handler", "code": str(tmp)}},
        "triggers": [
            {"function": "f", "source": source, "enabled": False},
            {"name": "other", "function": "f", "source": source},
        ],
    }
    return validate_data(data, registry(), tmp)


def test_refused_source_is_one_line(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"type": "unrecordable"})
    with pytest.raises(ConfigError, match="'f-0' cannot be recorded: reading it consumes"):
        recording_config(cfg, "f-0", tmp_path)  # type: ignore[arg-type]


def test_recording_config_keeps_one_trigger_enabled_without_listeners(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"type": "kafka", "bootstrap_servers": "k:9092", "topics": ["t"]})
    rcfg = recording_config(cfg, "f-0", tmp_path / "scratch")  # type: ignore[arg-type]
    (trigger,) = rcfg.trigger_list
    assert trigger.name == "f-0" and trigger.enabled and trigger.on_failure_config is None
    assert trigger.source_config.group_id == "f-0-triggerd-record"  # type: ignore[attr-defined]
    assert rcfg.daemon.control_listen == "" and rcfg.daemon.listen == ""
    assert rcfg.daemon.state.endswith("scratch/state.db")


@pytest.mark.parametrize(
    ("source", "setting", "recorded"),
    [
        (
            {"type": "rabbitmq", "url": "amqp://g:g@h:5672/", "queue": "q", "declare": True},
            "declare",
            False,
        ),
        ({"type": "sns_http", "path": "/sns"}, "confirm_subscriptions", False),
    ],
)
def test_a_recording_creates_and_confirms_nothing(
    tmp_path: Path, source: dict[str, object], setting: str, recorded: object
) -> None:
    cfg = config(tmp_path, source)
    (trigger,) = recording_config(cfg, "f-0", tmp_path / "s").trigger_list  # type: ignore[arg-type]
    assert trigger.source_config.recording
    assert getattr(trigger.source_config, setting) == recorded


async def test_a_new_recording_numbers_on_after_the_files_there(tmp_path: Path) -> None:
    for name in ("orders_eu-0001.json", "orders_eu-0003.json", "other-0009.json", "x.json"):
        (tmp_path / name).write_text("{}")
    assert recorded_before("orders/eu", tmp_path) == 3
    assert recorded_before("orders/eu", tmp_path / "missing") == 0
    recorder = Recorder("orders/eu", tmp_path, count=1, first=4)
    await CaptureBackend(recorder).invoke(b"{}")
    assert [p.name for p in recorder.files] == ["orders_eu-0004.json"]
    assert (tmp_path / "orders_eu-0001.json").read_text() == "{}"
