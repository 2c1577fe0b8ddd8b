"""`triggerd status`: each trigger and each Invoke API async queue with its depth and
dead-lettered records (read from the state store, read-only), the daemon's readiness and the
lag of partitioned sources (asked of the running daemon, over TLS when it serves TLS).

Exit status: 0 when the daemon answers and every trigger runs; DAEMON_UNREACHABLE when it
does not answer; TRIGGER_FAILING when it answers and a trigger (or the state store) is
degraded; else the state store's own codes when the store cannot be read (the daemon is
asked all the same, and queued/dlq show as unknown).

A config with a SQLite store and no source that reports a status line (the bundled example)
is shown without an event loop (`run_status_now`): asyncio and uvloop are about a tenth of
the command's start-up."""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from triggerd.cli.output import emit
from triggerd.cli.readstate import StoreSnapshot, read_snapshot, read_snapshot_now
from triggerd.cli.sources import has_status_lines, status_lines
from triggerd.config.model import ConfigBase
from triggerd.config.plugins import Registry
from triggerd.state.factory import is_postgres_url
from triggerd.types import ExitCode, OperatorError

__all__ = ["NOT_OUR_CERTIFICATE", "daemon_tls", "daemon_url", "run_status"]

#: How long the daemon may take to answer (it is local; it should answer at once).
DAEMON_TIMEOUT_S = 3.0
#: The most of an answer read: /readyz and /statusz are a few KB per trigger.
ANSWER_LIMIT_BYTES = 8 * 1024 * 1024


def daemon_url(cfg: ConfigBase) -> str | None:
    """Where the daemon serves /readyz and /statusz, or None when it serves no HTTP.

    The one place that knows: the first listener serving the control endpoints
    (`control_listen`, or `listen` with `control_on_public`). A wildcard listen address is
    reached on loopback."""
    control = cfg.daemon.control_addresses
    if not control:
        return None
    listen = control[0]
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    scheme = "https" if cfg.daemon.tls_cert_file else "http"
    return f"{scheme}://{host}:{port}"


def daemon_tls(cfg: ConfigBase) -> Any:
    """What aiohttp's `ssl=` gets to reach the daemon: True (plain http: unused), or the
    daemon's own certificate pinned by its SHA-256 fingerprint (`daemon_certificate`)."""
    import aiohttp

    pin = daemon_certificate(cfg)
    return True if pin is None else aiohttp.Fingerprint(pin)


def daemon_certificate(cfg: ConfigBase) -> bytes | None:
    """The SHA-256 of the daemon's own certificate (DER), or None when it serves plain http.

    The daemon is reached on an address (often loopback) that a production certificate
    does not name (DNS:triggerd.example.com), so verifying the name would fail; the
    certificate this config gives the daemon identifies it exactly instead. Raises
    OperatorError when that file cannot be read."""
    cert = cfg.daemon.tls_cert_file
    if not cert:
        return None
    try:
        with open(cert, encoding="ascii", errors="replace") as f:
            pem = f.read()
        end = pem.index(_PEM_END) + len(_PEM_END)
        der = ssl.PEM_cert_to_DER_cert(pem[pem.index(_PEM_BEGIN) : end])
    except OSError as exc:
        raise OperatorError(
            f"cannot read daemon.tls_cert_file {cert} to verify the daemon: {exc.strerror or exc}",
            ExitCode.DAEMON_UNREACHABLE,
        ) from None
    except ValueError:
        raise OperatorError(
            f"daemon.tls_cert_file {cert} holds no PEM certificate",
            ExitCode.CONFIG_INVALID,
        ) from None
    return hashlib.sha256(der).digest()


_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


NOT_OUR_CERTIFICATE = (
    "TLS: the server's certificate is not the one in daemon.tls_cert_file (another server "
    "on that port, or a daemon not yet reloaded after the certificate changed)"
)


@dataclass
class DaemonView:
    url: str | None
    status: str = "not checked"
    error: str | None = None
    triggers: dict[str, Any] = field(default_factory=dict)
    lag: dict[str, Any] = field(default_factory=dict)

    @property
    def reachable(self) -> bool:
        return self.error is None and self.url is not None


class _NotOurCertificate(Exception):
    pass


def _get_json(conn: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> Any:
    """(status, parsed JSON body) of a GET on an open connection (ValueError: not JSON)."""
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    raw = resp.read(ANSWER_LIMIT_BYTES + 1)
    if len(raw) > ANSWER_LIMIT_BYTES:
        raise ValueError(f"{path} answered more than {ANSWER_LIMIT_BYTES} bytes")
    return resp.status, json.loads(raw) if raw else None


def _ask(url: str, pin: bytes | None, headers: dict[str, str]) -> tuple[int, Any, Any]:
    """(/readyz status, /readyz body, /statusz body or {}) over one connection, blocking.

    The standard library's client, in a thread: one command's two requests do not need
    aiohttp, whose import would be most of `triggerd status`'s start-up. With TLS, the
    certificate is compared with the pinned one before anything (the token) is sent."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    deadline = time.monotonic() + DAEMON_TIMEOUT_S
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the pinned certificate is checked instead
        conn = http.client.HTTPSConnection(host, port, timeout=DAEMON_TIMEOUT_S, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=DAEMON_TIMEOUT_S)
    try:
        conn.connect()
        if pin is not None:
            assert isinstance(conn.sock, ssl.SSLSocket)
            der = conn.sock.getpeercert(binary_form=True)
            if der is None or hashlib.sha256(der).digest() != pin:
                raise _NotOurCertificate
        conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
        status, body = _get_json(conn, "/readyz", headers)
        conn.sock.settimeout(max(0.1, deadline - time.monotonic()))
        lag_status, lag = _get_json(conn, "/statusz", headers)
        return status, body, lag if lag_status == 200 else {}
    finally:
        conn.close()


async def ask_daemon(cfg: ConfigBase) -> DaemonView:
    """`ask_daemon_now` in a thread."""
    import asyncio

    return await asyncio.to_thread(ask_daemon_now, cfg)


def ask_daemon_now(cfg: ConfigBase) -> DaemonView:
    """The daemon's readiness, triggers and lag (blocking: at most DAEMON_TIMEOUT_S)."""
    url = daemon_url(cfg)
    view = DaemonView(url)
    if url is None:
        view.status = "no control listener configured (control_listen is empty): not asked"
        return view
    try:
        pin = daemon_certificate(cfg)
    except OperatorError as exc:
        view.status, view.error = "not checked", str(exc)
        return view
    # From loopback the daemon answers anyway; from an interface address it wants the token.
    token = cfg.daemon.metrics_token
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    try:
        status, body, lag = _ask(url, pin, headers)
        refused = status in (401, 403)
    except _NotOurCertificate:
        view.status, view.error = "not reachable", NOT_OUR_CERTIFICATE
        return view
    except ssl.SSLError as exc:
        view.status, view.error = "not reachable", f"TLS: {exc}"
        return view
    except (http.client.HTTPException, OSError, ValueError) as exc:
        view.status, view.error = "not reachable", _reason(url, exc)
        return view
    if refused or not isinstance(body, dict):
        view.status, view.error = "not reachable", f"{url}/readyz answered {body!r}"
        return view
    view.status = str(body.get("status", "?"))
    triggers = body.get("triggers")
    view.triggers = triggers if isinstance(triggers, dict) else {}
    store = body.get("state_store")
    if isinstance(store, dict) and store.get("status") != "ok":
        view.triggers.setdefault(
            "(state store)", {"status": "failing", "reasons": [str(store.get("error"))]}
        )
    lag_triggers = lag.get("triggers") if isinstance(lag, dict) else None
    view.lag = lag_triggers if isinstance(lag_triggers, dict) else {}
    return view


def _reason(url: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer from {url} within {DAEMON_TIMEOUT_S:g}s"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot connect to {url}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def _trigger_state(
    name: str, enabled: bool, view: DaemonView, paused: frozenset[str] = frozenset()
) -> tuple[str, str]:
    if not enabled:
        return "disabled", ""
    info = view.triggers.get(name)
    if not isinstance(info, dict) and name in paused:
        return "paused", ""  # the daemon is down: the store says so
    if not isinstance(info, dict):
        return ("unknown" if not view.reachable else "not running"), ""
    reasons = info.get("reasons") or []
    return str(info.get("status", "?")), "; ".join(str(r) for r in reasons)


def _rows(cfg: ConfigBase, snap: StoreSnapshot | None, view: DaemonView) -> list[dict[str, Any]]:
    """One row per trigger and async queue; queued and dlq are None (unknown) when the
    store could not be read."""
    from triggerd.http.queues import queue_name

    if snap is None:
        snap = StoreSnapshot("", {}, {})
        unknown = True
    else:
        unknown = False
    rows = []
    for i, trig in enumerate(cfg.trigger_list):
        name = cfg.trigger_name(i)
        state, reasons = _trigger_state(name, trig.enabled, view, snap.paused)
        rows.append(
            {
                "trigger": name,
                "source": str(getattr(trig.source_config, "type", "?")),
                "function": trig.function,
                "state": state,
                "queued": None if unknown else snap.queued.get(name, 0),
                "dlq": None if unknown else snap.dead.get(name, 0),
                "reasons": reasons,
            }
        )
    queues = {queue_name(fn): fn for fn in cfg.functions}
    for queue in sorted(q for q in snap.queued if q.startswith(queue_name(""))):
        queues.setdefault(queue, queue.removeprefix(queue_name("")))
    for queue, function in queues.items():
        rows.append(
            {
                "trigger": queue,
                "source": "invoke (Event)",
                "function": function,
                "state": "",
                "queued": None if unknown else snap.queued.get(queue, 0),
                "dlq": None if unknown else snap.dead.get(queue, 0),
                "reasons": "",
            }
        )
    # SNS's queues (triggerd.fanout.sns): FIFO deliveries held per function, SQS sends.
    for queue in sorted(q for q in snap.queued if q.startswith(("sns-fifo:", "sns-sqs:"))):
        fifo = queue.startswith("sns-fifo:")
        rows.append(
            {
                "trigger": queue,
                "source": "sns (FIFO, held)" if fifo else "sns (to SQS)",
                "function": queue.removeprefix("sns-fifo:") if fifo else "",
                "state": "",
                "queued": None if unknown else snap.queued.get(queue, 0),
                "dlq": None if unknown else snap.dead.get(queue, 0),
                "reasons": "",
            }
        )
    return rows


def _exit_code(cfg: ConfigBase, view: DaemonView, rows: list[dict[str, Any]]) -> int:
    if view.url is not None and not view.reachable:
        return int(ExitCode.DAEMON_UNREACHABLE)
    if any(r["state"] in ("degraded", "failing") for r in rows) or "(state store)" in (
        view.triggers
    ):
        return int(ExitCode.TRIGGER_FAILING)
    return 0


def _store_path(cfg: ConfigBase) -> str:
    from triggerd.state.factory import sqlite_path

    if is_postgres_url(cfg.daemon.state):
        from triggerd.state.pgschema import redact_state_url

        return redact_state_url(cfg.daemon.state)
    return sqlite_path(cfg.daemon.state)


def lag_rows(lag: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """/statusz's triggers as rows (one per partition) and rebalances per trigger."""
    partitions = [
        {"trigger": name, **p}
        for name, t in lag.items()
        if isinstance(t, dict)
        for p in t.get("partitions", [])
        if isinstance(p, dict)
    ]
    rebalances = {
        name: int(t.get("rebalances", 0)) for name, t in lag.items() if isinstance(t, dict)
    }
    return partitions, rebalances


LAG_COLUMNS = ["trigger", "partition", "committed_offset", "lag_records", "lag_seconds"]


def print_lag(partitions: list[dict[str, Any]], rebalances: dict[str, int]) -> None:
    """A table row per partition, then each trigger's rebalances (nothing when none)."""
    if not partitions:
        return
    columns = list(LAG_COLUMNS)
    if any("records_per_s" in p for p in partitions):  # stream shards count their rate
        columns.append("records_per_s")
    rows = [[p.get(c) for c in columns] for p in partitions]
    emit("table", columns=columns, rows=rows, empty="")
    for name, count in rebalances.items():
        click.echo(f"{name}: {count} rebalance(s)")


def print_cluster(snap: StoreSnapshot) -> None:
    """A PostgreSQL store's daemons (heartbeats) and leases (who fires which schedule, who
    reads which stream shard), then per stream trigger how its shards are spread."""
    for m in snap.members:
        click.echo(
            f"member {m['member']}: heartbeat {m['heartbeat_age_s']} s ago, up {m['up_s']} s"
        )
    for lease in snap.leases:
        if lease["holder"] is None:
            held = f"free (epoch {lease['epoch']})"
        else:
            held = (
                f"held by {lease['holder']} at epoch {lease['epoch']}, "
                f"expires in {lease['expires_in_s']} s unless renewed"
            )
        click.echo(f"lease {lease['lease']}: {held}")
    for trigger, line in shard_spread(snap.leases).items():
        click.echo(f"shards of {trigger}: {line}")


def shard_spread(leases: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Per trigger with stream shard leases (`shard:<trigger>/<shard id>`): how many shards
    each daemon reads, and how many nobody holds."""
    counts: dict[str, Counter[str]] = {}
    for lease in leases:
        name = str(lease["lease"])
        if not name.startswith("shard:") or "/" not in name:
            continue
        trigger = name[len("shard:") :].rsplit("/", 1)[0]
        holder = lease["holder"]
        counts.setdefault(trigger, Counter())[str(holder) if holder else "free"] += 1
    return {
        trigger: ", ".join(
            f"{n} {'free' if who == 'free' else 'read by ' + who}"
            for who, n in sorted(c.items(), key=lambda kv: (kv[0] == "free", kv[0]))
        )
        for trigger, c in sorted(counts.items())
    }


def needs_loop(cfg: ConfigBase, registry: Registry) -> bool:
    """Whether `status` needs an event loop (`run_status`): a PostgreSQL store, or a source
    to ask for its status line; else `run_status_now` shows the same."""
    return is_postgres_url(cfg.daemon.state) or has_status_lines(cfg, registry)


def _store_failed(exc: OperatorError) -> OperatorError:
    click.echo(f"triggerd: {exc} (queued and dlq unknown)", err=True)
    return exc


async def run_status(cfg: ConfigBase, registry: Registry, output: str) -> int:
    """Exit status: the daemon's first (unreachable 9, a trigger failing 10), then the
    store's (3-6) when it could not be read; the daemon is asked either way."""
    snap: StoreSnapshot | None = None
    store_error: OperatorError | None = None
    try:
        snap = await read_snapshot(cfg.daemon.state)
    except OperatorError as exc:
        store_error = _store_failed(exc)
    view = await ask_daemon(cfg)
    sources = await status_lines(cfg, registry)
    return _report(cfg, snap, store_error, view, sources, output)


def run_status_now(cfg: ConfigBase, output: str) -> int:
    """`run_status` without an event loop, when `needs_loop` says none is needed."""
    snap: StoreSnapshot | None = None
    store_error: OperatorError | None = None
    try:
        snap = read_snapshot_now(cfg.daemon.state)
    except OperatorError as exc:
        store_error = _store_failed(exc)
    return _report(cfg, snap, store_error, ask_daemon_now(cfg), [], output)


def _report(
    cfg: ConfigBase,
    snap: StoreSnapshot | None,
    store_error: OperatorError | None,
    view: DaemonView,
    sources: list[str],
    output: str,
) -> int:
    """Print the status; its exit status."""
    rows = _rows(cfg, snap, view)
    partitions, rebalances = lag_rows(view.lag)
    code = _exit_code(cfg, view, rows)
    if code == 0 and store_error is not None:
        code = int(store_error.exit_code)
    if output == "json":
        emit(
            "json",
            columns=[],
            rows=[],
            empty="",
            records={
                "state_store": snap.path if snap is not None else _store_path(cfg),
                "state_store_error": None if store_error is None else str(store_error),
                "daemon": {"url": view.url, "status": view.status, "error": view.error},
                "triggers": rows,
                "sources": sources,
                "partitions": partitions,
                "rebalances": rebalances,
                "members": list(snap.members) if snap is not None else [],
                "leases": list(snap.leases) if snap is not None else [],
                "exit_code": code,
            },
        )
        return code
    columns = ["trigger", "source", "function", "state", "queued", "dlq", "reasons"]
    emit(
        "table",
        columns=columns,
        rows=[[r[c] for c in columns] for r in rows],
        empty="no triggers and no async queues",
    )
    for line in sources:
        click.echo(line)
    print_lag(partitions, rebalances)
    if snap is not None:
        print_cluster(snap)
    where = f"daemon at {view.url}" if view.url else "daemon"
    detail = f" ({view.error})" if view.error else ""
    click.echo(f"{where}: {view.status}{detail}")
    return code
