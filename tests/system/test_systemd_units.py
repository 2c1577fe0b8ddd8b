"""The shipped systemd units as docs/server-install.md installs them: the units and their
hardening drop-ins in /etc/systemd/system, the command at /opt/triggerd/bin/triggerd. Both
paths are tmpfs mounts in a private mount namespace, so the machine's own are untouched:
`systemd-analyze verify` must pass and `systemd-analyze security --offline=yes` must report
an exposure of at most 2.0 (the figure the docs give)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.system

UNITS = Path(__file__).resolve().parents[2] / "systemd"
TRIGGERD = Path(sys.executable).parent / "triggerd"

INSTALL = """
set -e
mount -t tmpfs tmpfs /opt
mkdir -p /opt/triggerd/bin
ln -s "$TRIGGERD" /opt/triggerd/bin/triggerd
mount -t tmpfs tmpfs /etc/systemd/system
cp -r "$UNITS"/triggerd.service "$UNITS"/triggerd@.service /etc/systemd/system/
cp -r "$UNITS"/triggerd.service.d "$UNITS"/triggerd@.service.d /etc/systemd/system/
cd /
"""


def installed(command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` (sh) with the units and the command installed, in a private namespace."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (needs root): {probe.stderr.strip()!r}")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "UNITS": str(UNITS), "TRIGGERD": str(TRIGGERD)}
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", INSTALL + command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_installed_units_verify() -> None:
    result = installed("systemd-analyze verify triggerd.service triggerd@orders.service")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "triggerd" not in result.stderr, result.stderr  # no warning about our units


@pytest.mark.parametrize("unit", ["triggerd.service", "triggerd@orders.service"])
def test_the_exposure_is_at_most_2(unit: str) -> None:
    result = installed(f"systemd-analyze security --offline=yes --no-pager {unit}")
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip(f"this systemd has no security --offline: {result.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"{unit}: exposure {match.group(1)}")
    assert float(match.group(1)) <= 2.0
    # The drop-in was read: its system call filter counts.
    assert re.search(r"✓ SystemCallFilter=~@privileged", result.stdout), result.stdout


def test_both_units_share_one_hardening_drop_in() -> None:
    plain = (UNITS / "triggerd.service.d" / "hardening.conf").read_text()
    assert (UNITS / "triggerd@.service.d" / "hardening.conf").read_text() == plain


@pytest.mark.parametrize("unit", ["triggerd.service", "triggerd@.service"])
def test_nothing_before_the_daemon_can_fail_the_start(unit: str) -> None:
    # RestartPreventExitStatus= applies to the main process only: an ExecStartPre= that
    # failed (a config error, an unwritable store) would be restarted in a loop whatever its
    # status, so every ExecStartPre= has its failures ignored ("-") and `run` validates.
    lines = (UNITS / unit).read_text().splitlines()
    pre = [line for line in lines if line.startswith("ExecStartPre=")]
    assert pre, "the build step runs before the daemon"
    assert all(line.startswith("ExecStartPre=-") for line in pre), pre
    assert any(line.startswith("RestartPreventExitStatus=2 3 4 5 6 7 8") for line in lines)


def test_sysusers_and_tmpfiles_create_the_user_and_the_config_directory(tmp_path: Path) -> None:
    # As the package's install step would apply them, into a scratch root (--root): the
    # service user and group exist, and /etc/triggerd is 0750 root:triggerd.
    if os.geteuid() != 0:
        pytest.skip("creating root:triggerd files needs root")
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install systemd)")
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        (tmp_path / "etc" / name).write_text(
            "root:x:0:0:root:/root:/bin/sh\n" if name == "passwd" else "root:x:0:\n"
        )
    sysusers = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "triggerd.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sysusers.returncode == 0, sysusers.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (tmp_path / "etc" / "group").read_text().splitlines()
    }
    assert "triggerd" in users and "triggerd" in groups
    assert users["triggerd"][5] == "/var/lib/triggerd"
    tmpfiles = subprocess.run(
        [
            "systemd-tmpfiles",
            f"--root={tmp_path}",
            "--create",
            str(UNITS / "triggerd.tmpfiles.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tmpfiles.returncode == 0, tmpfiles.stderr
    config_dir = (tmp_path / "etc" / "triggerd").stat()
    assert stat.S_IMODE(config_dir.st_mode) == 0o750
    assert config_dir.st_uid == 0 and str(config_dir.st_gid) == groups["triggerd"][2]
