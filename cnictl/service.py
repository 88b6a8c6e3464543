"""The resident helper as a socket-activated systemd service, and its restart after an upgrade.

``cnictl install`` writes two units: ``pycni-helper.socket`` listens on the launchers' socket (root
only) before any container runtime starts, and ``pycni-helper.service`` runs ``cnictl helper``,
which takes the socket from systemd; the first plugin call starts it. They are enabled and started
only when systemd is the init system and reads the directory they were written to.

A helper serves only launchers of its own release (``cni.release``). After an upgrade the running
helper is replaced: ``systemctl try-restart`` under systemd, otherwise a control request asks it
to exit, so that the next (socket-activated) start runs the new code.
"""
from __future__ import annotations

import os
import subprocess

from cnictl.errors import CnictlError

DEFAULT_UNIT_DIR = "/etc/systemd/system"
SOCKET_UNIT = "pycni-helper.socket"
SERVICE_UNIT = "pycni-helper.service"
UNITS = (SOCKET_UNIT, SERVICE_UNIT)
UNIT_MARKER = "# Written by `cnictl install`"  # uninstall removes only units that carry it
# Where systemd looks for units an administrator installs; units elsewhere are written, not enabled.
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
                     "/usr/lib/systemd/system", "/lib/systemd/system")
RUNTIMES = "containerd.service crio.service kubelet.service"
# After an install under systemd: load the units, listen, and restart a running helper so that it
# runs the code just installed (a stopped one starts with it on the next call anyway).
INSTALL_ACTIONS = (["daemon-reload"], ["enable", "--now", SOCKET_UNIT], ["try-restart", SERVICE_UNIT])


def helper_command(interpreter: str) -> list[str]:
    """How the service runs the helper: the environment's ``cnictl helper`` (``-m`` without one)."""
    if not os.path.isabs(interpreter) or any(c.isspace() for c in interpreter):
        raise CnictlError(f"interpreter path {interpreter!r} must be absolute and without whitespace")
    script = os.path.join(os.path.dirname(interpreter), "cnictl")
    if os.access(script, os.X_OK):
        return [script, "helper"]
    return [interpreter, "-P", "-m", "cnictl.cli", "helper"]


def render_socket_unit(socket_path: str, release: str) -> str:
    return f"""{UNIT_MARKER} (pycni {release}); `cnictl uninstall` removes it.
# The plugin executables hand their calls to the resident helper through this socket; the first
# call starts pycni-helper.service. Without the helper they run the plugins themselves.
[Unit]
Description=pycni resident helper socket (warm CNI plugin calls)
Before={RUNTIMES}

[Socket]
ListenStream={socket_path}
SocketUser=root
SocketGroup=root
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def render_service_unit(command: list[str], release: str) -> str:
    return f"""{UNIT_MARKER} (pycni {release}); `cnictl uninstall` removes it.
# Started by pycni-helper.socket on the first plugin call; it serves only launchers of its release.
[Unit]
Description=pycni resident helper for the CNI plugins
Requires={SOCKET_UNIT}
After={SOCKET_UNIT}

[Service]
ExecStart={" ".join(command)}
Restart=on-failure
# Stopping or restarting ends the helper and its idle workers (they die with it); a worker in the
# middle of a call finishes it instead of leaving a half-done ADD behind.
KillMode=process
"""


def install_units(unit_dir: str, interpreter: str, release: str) -> list[str]:
    """Write both units into ``unit_dir``; their paths. The socket is the launchers' built-in path."""
    from cni import launcher  # noqa: PLC0415
    from cni.files import atomic_write  # noqa: PLC0415

    contents = {SOCKET_UNIT: render_socket_unit(launcher.DEFAULT_SOCKET, release),
                SERVICE_UNIT: render_service_unit(helper_command(interpreter), release)}
    try:
        os.makedirs(unit_dir, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CnictlError(f"cannot create {unit_dir}: {exc.strerror}") from None
    written = []
    for name, text in contents.items():
        path = os.path.join(unit_dir, name)
        try:
            atomic_write(path, text.encode(), 0o644)
            os.chmod(path, 0o644)
        except OSError as exc:
            raise CnictlError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written


def our_units(unit_dir: str) -> list[str]:
    """The helper's unit files in ``unit_dir`` that ``cnictl install`` wrote."""
    found = []
    for name in UNITS:
        path = os.path.join(unit_dir, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if f.readline().startswith(UNIT_MARKER):
                    found.append(path)
        except OSError:
            continue
    return found


def remove_units(unit_dir: str) -> list[str]:
    removed = []
    for path in our_units(unit_dir):
        try:
            os.unlink(path)
        except OSError as exc:
            raise CnictlError(f"cannot remove {path}: {exc.strerror}") from None
        removed.append(path)
    return removed


def systemd_running() -> bool:
    """Whether systemd is the init system (sd_booted(3))."""
    return os.path.isdir("/run/systemd/system")


def managed_by_systemd(unit_dir: str) -> bool:
    """Whether systemctl should load the units in ``unit_dir``: systemd runs and reads that directory."""
    return systemd_running() and os.path.realpath(unit_dir) in {os.path.realpath(d) for d in SYSTEMD_UNIT_DIRS}


def uninstall_actions(units_present: bool) -> tuple[list[list[str]], list[list[str]]]:
    """The systemctl commands before and after the unit files are removed (under systemd)."""
    if not units_present:
        return [], []
    return [["disable", "--now", *UNITS]], [["daemon-reload"]]


def systemctl(args: list[str]) -> None:
    try:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CnictlError(f"cannot run systemctl: {exc.strerror}") from None
    if proc.returncode != 0:
        raise CnictlError(f"systemctl {' '.join(args)} failed: {proc.stderr.strip() or proc.returncode}")


def retire_stale_helper(socket_path: str, release: str) -> str | None:
    """Ask a helper of another release to exit (without systemd); what was done, or None.

    Under socket activation the asking starts a helper if none runs: that one runs the installed
    code already and stays.
    """
    from cni import helper, launcher  # noqa: PLC0415

    try:
        running = helper.control(socket_path, launcher.STATUS)
        if running.get("version") == release:
            return None
        helper.control(socket_path, launcher.EXIT)
    except (OSError, ValueError):
        return None  # no helper, or one that cannot answer: nothing of it can serve this release
    return f"the helper (pid {running.get('pid')}, version {running.get('version')}) was asked to exit"
