"""Installing the plugin executables: one tiny launcher per plugin, named after its CNI type.

A runtime execs ``<CNI_PATH>/<type>`` directly, without activating any virtualenv, so each
launcher names its interpreter absolutely and runs it with ``-I -S``: isolated (no PYTHON*
variables, no script directory on sys.path) and without ``site``, which saves most of the
interpreter's start-up. Because ``site`` is skipped, the launcher lists the import roots itself:
the project's package root and the site-packages of the environment that ran ``cnictl install``.

The second line, ``# pycni-entry: <module>:<attr>``, is how ``cni.invoke`` recognises one of our
own plugins and runs it in-process instead of exec'ing it.

The launcher hands the call to ``cni.launcher.main``, which forwards it to the resident helper when
one is running and otherwise runs the plugin through ``cni.skel`` in the launcher's own process; it
names the release it was installed with (``cni.release``: package version and source digest), and a
helper of another release refuses its calls. A "direct" launcher (``--direct``, or when
``cni.launcher`` does not exist) imports the plugin module and calls ``cni.skel.run(module.PLUGIN)``
itself.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from cnictl.errors import CnictlError

DEFAULT_DEST = "/opt/cni/bin"
ENTRY_MARKER = "# pycni-entry: "  # must match cni.invoke.ENTRY_MARKER
# The kernel reads at most this much of a "#!" line (BINPRM_BUF_SIZE is 256 since Linux 5.1).
MAX_SHEBANG = 255

PLUGIN_ENTRIES: dict[str, str] = {
    "bridge": "bridge.plugin:PLUGIN",
    "host-local": "hostlocal.plugin:PLUGIN",
    "portmap": "portmap.plugin:PLUGIN",
    "firewall": "firewall.plugin:PLUGIN",
    "ptp": "ptp.plugin:PLUGIN",
    "host-device": "hostdevice.plugin:PLUGIN",
    "loopback": "loopback.plugin:PLUGIN",
    "tuning": "tuning.plugin:PLUGIN",
}


def launcher_interpreter() -> str:
    """The interpreter a launcher names in its ``#!`` line.

    In a virtualenv it is the venv's own ``bin/python``: resolving it through its symlink would
    name the base interpreter, which no longer knows the venv. Outside one it is the interpreter
    running now (a pyenv shim never gets here: the shim execs the real interpreter).
    """
    if sys.prefix != sys.base_prefix:
        venv_python = os.path.join(sys.prefix, "bin", "python")
        if os.access(venv_python, os.X_OK):
            return venv_python
    if not sys.executable:
        raise CnictlError("cannot tell which Python interpreter is running; pass --python")
    return os.path.abspath(sys.executable)


def project_root() -> str:
    """The directory holding the ``cni`` package (and its siblings bridge/, portmap/, ...)."""
    import cni  # noqa: PLC0415

    return os.path.dirname(os.path.dirname(os.path.abspath(cni.__file__)))


def site_dirs() -> list[str]:
    """The site-packages directories ``site`` would add, plus the directories their .pth files list.

    ``-S`` skips both, so a launcher gets them spelled out; .pth lines that run code (``import``)
    are not followed: a launcher must not run anything it does not name.
    """
    import site  # noqa: PLC0415
    import sysconfig  # noqa: PLC0415

    try:
        candidates = site.getsitepackages()
    except AttributeError:  # an old virtualenv's stripped-down site module
        candidates = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    found: list[str] = []
    for directory in candidates:
        if os.path.isdir(directory):
            found.append(directory)
            found.extend(_pth_directories(directory))
    return list(dict.fromkeys(found))


def import_roots() -> list[str]:
    return list(dict.fromkeys([project_root(), *site_dirs()]))


def helper_launcher_available() -> bool:
    """Whether ``cni.launcher`` (the resident-helper client) exists to hand calls to."""
    from importlib.util import find_spec  # noqa: PLC0415

    return find_spec("cni.launcher") is not None


def render_launcher(plugin_type: str, entry: str, interpreter: str, roots: Iterable[str],
                    direct: bool = False, release: str = "") -> bytes:
    module, attr = split_entry(entry)
    shebang = f"#!{interpreter} -IS"
    if not os.path.isabs(interpreter) or any(c.isspace() for c in interpreter):
        raise CnictlError(f"interpreter path {interpreter!r} must be absolute and without whitespace "
                          "to work in a #! line")
    if len(shebang.encode()) > MAX_SHEBANG:
        raise CnictlError(f"interpreter path is too long for a #! line ({len(shebang)} > {MAX_SHEBANG}): "
                          f"{interpreter}")
    lines = [
        shebang,
        f"{ENTRY_MARKER}{module}:{attr}",
        f'# CNI plugin "{plugin_type}", written by `cnictl install`. -I -S keep start-up short, so the',
        "# import roots that site would have added are listed here.",
        "import sys",
        f"sys.path += {list(roots)!r}",
    ]
    if direct:
        lines += ["import cni.skel", f"import {module}", f"cni.skel.run({module}.{attr})"]
    else:
        release_arg = f", {release!r}" if release else ""
        lines += ["import cni.launcher", f"cni.launcher.main({module + ':' + attr!r}{release_arg})"]
    return ("\n".join(lines) + "\n").encode()


def install(dest: str = DEFAULT_DEST, entries: Mapping[str, str] = PLUGIN_ENTRIES,
            interpreter: str | None = None, roots: Iterable[str] | None = None,
            direct: bool | None = None, release: str | None = None) -> list[str]:
    """Write one launcher per ``type -> module:attr`` entry into ``dest``; return their paths.

    Each file is replaced atomically with mode 0755. Entries whose module does not exist yet are
    installed all the same: they fail at exec time until the module is written. ``direct`` None
    means "direct only when there is no cni.launcher". ``release`` (default: that of the installed
    tree) is what the launchers tell the helper.
    """
    interpreter = interpreter or launcher_interpreter()
    roots = list(roots) if roots is not None else import_roots()
    if direct is None:
        direct = not helper_launcher_available()
    if release is None:
        from cni import release as releases  # noqa: PLC0415

        release = releases.current(project_root())
    from cni.files import atomic_write  # noqa: PLC0415

    try:
        os.makedirs(dest, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise CnictlError(f"cannot create {dest}: {exc.strerror}") from None
    written = []
    for plugin_type, entry in entries.items():
        if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
            raise CnictlError(f"invalid plugin type {plugin_type!r}")
        path = os.path.join(dest, plugin_type)
        content = render_launcher(plugin_type, entry, interpreter, roots, direct, release)
        try:
            atomic_write(path, content, 0o755)
            os.chmod(path, 0o755)  # atomic_write's mode is filtered by the umask
        except OSError as exc:
            raise CnictlError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written


def uninstall(dest: str = DEFAULT_DEST) -> list[str]:
    """Remove our launchers from ``dest`` (files whose second line is the entry marker); their paths.

    Anything else there (the runtime's other plugins) stays, whatever its name.
    """
    try:
        names = sorted(os.listdir(dest))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CnictlError(f"cannot list {dest}: {exc.strerror}") from None
    removed = []
    for name in names:
        path = os.path.join(dest, name)
        if not is_launcher(path):
            continue
        try:
            os.unlink(path)
        except OSError as exc:
            raise CnictlError(f"cannot remove {path}: {exc.strerror}") from None
        removed.append(path)
    return removed


def is_launcher(path: str) -> bool:
    """Whether ``path`` is a regular file that ``cnictl install`` wrote."""
    import stat  # noqa: PLC0415

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        with open(path, "rb") as f:
            head = f.read(MAX_SHEBANG + 1 + 512)
    except OSError:
        return False
    lines = head.split(b"\n", 2)
    return len(lines) > 2 and lines[0].startswith(b"#!") and lines[1].startswith(ENTRY_MARKER.encode())


def select(only: Iterable[str] | None, entries: Mapping[str, str] = PLUGIN_ENTRIES) -> dict[str, str]:
    """The entries named in ``only`` (all of them when it is empty or None)."""
    wanted = [name for item in only or () for name in item.split(",") if name]
    if not wanted:
        return dict(entries)
    unknown = [name for name in wanted if name not in entries]
    if unknown:
        raise CnictlError(f"unknown plugin type(s) {', '.join(unknown)}; known: {', '.join(entries)}")
    return {name: entries[name] for name in dict.fromkeys(wanted)}


def split_entry(entry: str) -> tuple[str, str]:
    """'package.module:ATTR' -> (module, attr), refusing anything that is not plain dotted names."""
    module, sep, attr = entry.partition(":")
    attr = attr if sep else "PLUGIN"
    if not module or not all(part.isidentifier() for part in module.split(".")) or not attr.isidentifier():
        raise CnictlError(f"invalid entry point {entry!r}: expected module.path:ATTRIBUTE")
    return module, attr


def _pth_directories(site_dir: str) -> list[str]:
    found = []
    try:
        names = sorted(n for n in os.listdir(site_dir) if n.endswith(".pth"))
    except OSError:
        return found
    for name in names:
        try:
            with open(os.path.join(site_dir, name), encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for line in lines:
            line = line.strip()
            if not line or line.startswith(("#", "import ", "import\t")):
                continue
            path = os.path.join(site_dir, line)
            if os.path.isdir(path):
                found.append(os.path.abspath(path))
    return found
