"""Import python-iptables without its start-up tax.

A plain ``import iptc`` costs ~200-250 ms, all of it in library discovery rather than
in anything useful:

* ``iptc.util`` imports ``distutils.sysconfig`` (with setuptools installed that drags in
  setuptools and pkg_resources, ~120 ms) only to have a fallback search directory;
* ``ctypes.util.find_library`` runs ``ldconfig -p``/``gcc``/``ld`` subprocesses for every
  name python-iptables probes (libc twice, ip4tc, ip6tc, xtables, and four spellings of
  its own ``xtwrapper`` helper that are expected to miss), ~15 ms each;
* without ``XTABLES_LIBDIR`` the extension directory is found by parsing
  ``ldconfig -N -v``;
* ``ip_tables``/``ip6_tables`` are "loaded" by spawning ``modprobe`` even when the kernel
  already has them.

:func:`load_iptc` removes each of those costs while the import runs, and only then:
the distutils import is made to fail so python-iptables takes its own stdlib
``sysconfig`` fallback; ``find_library`` answers from the dynamic linker's search
directories (``LD_LIBRARY_PATH``, ``/etc/ld.so.conf``, the interpreter's multiarch
directories) by looking at file names; ``XTABLES_LIBDIR`` is set to the ``xtables``
directory next to the ``libxtables`` that will be loaded (unless the caller set it); and
``modprobe`` is skipped for a module the kernel lists as loaded. Anything the fast path
cannot resolve falls back to python-iptables' own behaviour, so correctness never
depends on the shortcuts.

Measured (Debian 12 libs, Python 3.11, python-iptables 1.2.0, fresh interpreter, medians):
plain ``import iptc`` ~210 ms; with only the environment variables and a distutils stub
~75 ms (of which ~60 ms still find_library subprocesses); :func:`load_iptc` ~26 ms,
~12 ms of it python-iptables' own module code and library loading, the rest stdlib
modules (ctypes, re, socket, ...) a plugin mostly has loaded anyway.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.machinery
import os
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

#: How the last :func:`load_iptc` went, for logs and benchmarks.
LOAD_INFO: dict[str, object] = {}

_SONAME_VERSION = re.compile(r"\.so((?:\.\d+)*)$")
# Files whose presence proves a directory holds xtables extensions.
_EXTENSION_PROBES = ("libxt_standard.so", "libxt_tcp.so")


class LibrarySearch:
    """Where shared libraries are looked up, in the dynamic linker's order of preference."""

    def __init__(self, dirs: Sequence[str]) -> None:
        self.dirs = tuple(dirs)
        self._indexes: dict[str, dict[str, list[str]]] = {}

    def resolve(self, name: str) -> str | None:
        """Path of the library ``ctypes.util.find_library(name)`` would name, or None.

        ``name`` is either a bare library name (``c``, ``ip4tc``: look for ``lib<name>.so.N``)
        or a file name (``libxtables.so.12``: look for exactly that file). Only libraries
        built for this interpreter's ELF class and machine count.
        """
        if "/" in name:
            return None
        for directory in self.dirs:
            found = self._library_in_dir(directory, name)
            if found:
                return found
        return None

    def _library_in_dir(self, directory: str, name: str) -> str | None:
        if ".so" in name:
            path = os.path.join(directory, name)
            return path if os.path.isfile(path) and _same_abi_as_python(path) else None
        versioned = [f for f in self._index(directory).get(f"lib{name}", ()) if _SONAME_VERSION.search(f)]
        # Highest version first; the unversioned development symlink sorts last.
        for file_name in sorted(versioned, key=_version_key, reverse=True):
            path = os.path.join(directory, file_name)
            if os.path.isfile(path) and _same_abi_as_python(path):
                return path
        return None

    def _index(self, directory: str) -> dict[str, list[str]]:
        """Shared-object file names of ``directory`` by stem (``libc`` -> ``libc.so.6``)."""
        index = self._indexes.get(directory)
        if index is None:
            index = {}
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            for file_name in names:
                stem, dot_so, _ = file_name.partition(".so")
                if dot_so:
                    index.setdefault(stem, []).append(file_name)
            self._indexes[directory] = index
        return index


def _version_key(file_name: str) -> tuple[int, ...]:
    match = _SONAME_VERSION.search(file_name)
    digits = match.group(1).strip(".").split(".") if match and match.group(1) else []
    return tuple(int(d) for d in digits if d)


def _elf_abi(path: str) -> bytes | None:
    """ELF class, byte order and machine of a file: enough to tell x86-64 from i386 etc."""
    try:
        with open(path, "rb") as elf:
            header = elf.read(20)
    except OSError:
        return None
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    return header[4:6] + header[18:20]


_PYTHON_ABI: list[bytes | None] = []


def _same_abi_as_python(path: str) -> bool:
    if not _PYTHON_ABI:
        _PYTHON_ABI.append(_elf_abi("/proc/self/exe") or _elf_abi(sys.executable))
    mine = _PYTHON_ABI[0]
    return mine is None or _elf_abi(path) == mine


def multiarch_triplet() -> str:
    """The Debian-style multiarch directory name of this interpreter (``x86_64-linux-gnu``)."""
    triplet = sysconfig.get_config_var("MULTIARCH")
    if isinstance(triplet, str) and triplet:
        return triplet
    import platform  # only when the interpreter was built without MULTIARCH

    return f"{platform.machine()}-linux-gnu"


def _ld_so_conf_dirs(path: str = "/etc/ld.so.conf", depth: int = 0) -> list[str]:
    """Directories listed in ld.so.conf (following ``include`` globs), in file order."""
    if depth > 4:
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as conf:
            lines = conf.read().splitlines()
    except OSError:
        return []
    dirs: list[str] = []
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("include"):
            for pattern in line.split()[1:]:
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.dirname(path), pattern)
                for included in sorted(glob.glob(pattern)):
                    dirs.extend(_ld_so_conf_dirs(included, depth + 1))
        elif line.startswith("hwcap"):
            continue
        else:
            dirs.append(line)
    return dirs


def library_search() -> LibrarySearch:
    """The directories the dynamic linker would search, existing ones only, no duplicates."""
    triplet = multiarch_triplet()
    env_dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    trusted = [f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib64", "/usr/lib64", "/lib", "/usr/lib"]
    ordered: list[str] = []
    seen: set[str] = set()
    for directory in [*env_dirs, *_ld_so_conf_dirs(), *trusted]:
        real = os.path.realpath(directory)
        if real not in seen and os.path.isdir(real):
            seen.add(real)
            ordered.append(directory)
    return LibrarySearch(tuple(ordered))


def xtables_extension_dir(search: LibrarySearch) -> str | None:
    """The ``xtables`` directory belonging to the libxtables the loader will pick."""
    libxtables = search.resolve("xtables")
    candidates = []
    if libxtables:
        candidates.append(os.path.join(os.path.dirname(os.path.realpath(libxtables)), "xtables"))
    candidates += [os.path.join(d, "xtables") for d in search.dirs]
    for candidate in candidates:
        if any(os.path.exists(os.path.join(candidate, probe)) for probe in _EXTENSION_PROBES):
            return candidate
    return None


def _loaded_kernel_modules() -> frozenset[str] | None:
    """Names in /proc/modules, or None when the kernel has no loadable modules."""
    try:
        with open("/proc/modules", encoding="ascii", errors="replace") as modules:
            return frozenset(line.split(" ", 1)[0] for line in modules)
    except OSError:
        return None


class _UtilPatcher:
    """Loads ``iptc.util`` normally, then makes its ``modprobe`` call skip loaded modules.

    A meta path finder and loader, duck-typed: importlib.abc alone costs ~9 ms to import.
    """

    def __init__(self) -> None:
        self._spec: importlib.machinery.ModuleSpec | None = None

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "iptc.util":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        self._spec = spec
        patched = importlib.machinery.ModuleSpec(fullname, self, origin=spec.origin)  # type: ignore[arg-type]
        patched.submodule_search_locations = spec.submodule_search_locations
        patched.has_location = spec.has_location
        patched.cached = spec.cached
        return patched

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        assert self._spec is not None and self._spec.loader is not None
        self._spec.loader.exec_module(module)
        original = getattr(module, "_load_ko", None)
        if callable(original):
            module._load_ko = _skip_loaded_modules(original)  # type: ignore[attr-defined]


def _skip_loaded_modules(load_ko: Callable[[str], object]) -> Callable[[str], object]:
    def load_unless_present(modname: str) -> object:
        loaded = _loaded_kernel_modules()
        if loaded is None or modname in loaded:
            return (0, None)  # what python-iptables returns for "nothing to do"
        return load_ko(modname)

    return load_unless_present


@contextlib.contextmanager
def _fast_import_environment(search: LibrarySearch) -> Iterator[None]:
    """Apply the shortcuts for the duration of one import, then undo them (env vars stay)."""
    finder = _UtilPatcher()
    with contextlib.ExitStack() as undo:
        undo.enter_context(_module_stub("distutils", None))
        undo.enter_context(_find_library_answering_from(search))
        undo.enter_context(_module_stub("subprocess", _lazy_subprocess_stub()))
        sys.meta_path.insert(0, finder)
        undo.callback(sys.meta_path.remove, finder)
        yield


@contextlib.contextmanager
def _module_stub(name: str, stub: ModuleType | None) -> Iterator[None]:
    """Stand ``stub`` in for an unimported top-level module while the block runs.

    ``None`` makes ``import name`` fail at once with ModuleNotFoundError. A module someone
    already imported is left alone.
    """
    if name in sys.modules:
        yield
        return
    sys.modules[name] = stub  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(name, 0) is stub:
            del sys.modules[name]


def _lazy_subprocess_stub() -> ModuleType:
    """What python-iptables takes from subprocess at import, without importing it (~5 ms).

    It only needs ``Popen`` when it really has to run modprobe; the real module is imported
    then.
    """
    stub = ModuleType("subprocess")

    def popen(*args: object, **kwargs: object) -> object:
        import subprocess

        return subprocess.Popen(*args, **kwargs)  # type: ignore[call-overload]

    stub.Popen = popen  # type: ignore[attr-defined]
    stub.PIPE = -1  # type: ignore[attr-defined]  # subprocess.PIPE
    return stub


@contextlib.contextmanager
def _find_library_answering_from(search: LibrarySearch) -> Iterator[None]:
    """Make ``ctypes.util.find_library`` look in ``search`` instead of forking ldconfig/gcc.

    python-iptables probes names that are meant to miss (it ships xtwrapper next to itself,
    not in a system directory), so a miss answers None at once; if a library it needs is
    missed, the import fails and :func:`load_iptc` retries the ordinary way. When nobody
    imported ``ctypes.util`` yet (it costs ~14 ms: shutil, subprocess, tempfile), a stub
    module stands in for it during the import instead.
    """
    real = sys.modules.get("ctypes.util")
    if real is not None:
        original = real.find_library
        real.find_library = search.resolve  # type: ignore[attr-defined]
        try:
            yield
        finally:
            real.find_library = original  # type: ignore[attr-defined]
        return
    stub = ModuleType("ctypes.util")
    stub.find_library = search.resolve  # type: ignore[attr-defined]
    sys.modules["ctypes.util"] = stub
    ctypes.util = stub  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if sys.modules.get("ctypes.util") is stub:
            del sys.modules["ctypes.util"]
        if getattr(ctypes, "util", None) is stub:
            del ctypes.util  # type: ignore[attr-defined]


def _forget_partial_import() -> None:
    for name in [n for n in sys.modules if n == "iptc" or n.startswith("iptc.")]:
        del sys.modules[name]


def load_iptc() -> ModuleType:
    """Import and return the ``iptc`` package (python-iptables), cheaply, once per process."""
    already = sys.modules.get("iptc")
    if already is not None and getattr(already, "Table6", None) is not None:
        return already
    started = time.perf_counter()
    search = library_search()
    if "XTABLES_LIBDIR" not in os.environ:
        extension_dir = xtables_extension_dir(search)
        if extension_dir:
            os.environ["XTABLES_LIBDIR"] = extension_dir
    try:
        with _fast_import_environment(search):
            import iptc
        LOAD_INFO.update(fast_path=True)
    except Exception as fast_error:  # noqa: BLE001 - any failure: do it python-iptables' way
        _forget_partial_import()
        LOAD_INFO.update(fast_path=False, fast_path_error=repr(fast_error))
        import iptc
    module: ModuleType = iptc
    LOAD_INFO.update(
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        xtables_libdir=os.environ.get("XTABLES_LIBDIR"),
        search_dirs=search.dirs,
    )
    return module
