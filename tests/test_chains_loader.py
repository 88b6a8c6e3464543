"""chains.iptc_loader: python-iptables imported without forking and without setuptools."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from chains import iptc_loader
from chains.iptc_loader import LibrarySearch, _ld_so_conf_dirs, _skip_loaded_modules

REPO = Path(__file__).resolve().parents[1]


def fresh_python(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter (nothing imported yet); it prints one JSON object."""
    env = {k: v for k, v in os.environ.items() if k not in ("XTABLES_LIBDIR", "IPTABLES_LIBDIR",
                                                             "PYTHON_IPTABLES_XTABLES_VERSION")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fast_import_spawns_nothing_and_skips_setuptools() -> None:
    result = fresh_python("""
        import json, sys
        spawned = []
        def audit(event, args):
            if event in ("subprocess.Popen", "os.posix_spawn", "os.exec", "os.fork", "os.system"):
                spawned.append(event)
        sys.addaudithook(audit)
        from chains.iptc_loader import load_iptc, LOAD_INFO
        iptc = load_iptc()
        print(json.dumps({
            "spawned": spawned,
            "fast_path": LOAD_INFO["fast_path"],
            "loaded": sorted(m for m in ("distutils", "setuptools", "pkg_resources", "ctypes.util", "subprocess")
                             if m in sys.modules),
            "has_tables": hasattr(iptc, "Table") and hasattr(iptc, "Table6"),
            "xtables_version": iptc.xtables.xtables_version,
            "xtables_libdir": iptc.xtables._xtables_libdir,
        }))
    """)
    assert result["spawned"] == []
    assert result["fast_path"] is True
    assert result["loaded"] == []
    assert result["has_tables"] is True
    assert result["xtables_version"] in (10, 11, 12)
    assert os.path.exists(os.path.join(str(result["xtables_libdir"]), "libxt_standard.so"))


def test_fast_import_finds_the_same_libraries_as_python_iptables() -> None:
    probe = """
        import json, os
        {prelude}
        iptc = load()
        with open("/proc/self/maps") as maps:
            mapped = sorted({{os.path.realpath(line.split()[-1]) for line in maps
                              if any(lib in line for lib in ("libip4tc", "libip6tc", "libxtables"))}})
        print(json.dumps({{"mapped": mapped, "version": iptc.xtables.xtables_version,
                          "libdir": os.path.realpath(iptc.xtables._xtables_libdir)}}))
    """
    fast = fresh_python(probe.format(prelude="from chains.iptc_loader import load_iptc as load"))
    plain = fresh_python(probe.format(prelude="def load():\n            import iptc\n            return iptc"))
    assert fast == plain
    assert len(fast["mapped"]) == 3  # type: ignore[arg-type]


def test_falls_back_to_the_ordinary_import_when_the_fast_path_fails() -> None:
    result = fresh_python("""
        import json
        from chains import iptc_loader
        iptc_loader.LibrarySearch.resolve = lambda self, name: None  # nothing found: ip4tc cannot load
        iptc = iptc_loader.load_iptc()
        print(json.dumps({"fast_path": iptc_loader.LOAD_INFO["fast_path"],
                          "error": iptc_loader.LOAD_INFO.get("fast_path_error", ""),
                          "has_tables": hasattr(iptc, "Table6")}))
    """)
    assert result["fast_path"] is False and result["error"]
    assert result["has_tables"] is True


@pytest.mark.timing
def test_fast_import_is_several_times_cheaper() -> None:
    def timed(code: str) -> float:
        runs = [fresh_python(f"""
            import json, time
            started = time.perf_counter()
            {code}
            print(json.dumps({{"ms": (time.perf_counter() - started) * 1000}}))
        """)["ms"] for _ in range(3)]
        return statistics.median(float(ms) for ms in runs)  # type: ignore[arg-type]

    fast = timed("from chains.iptc_loader import load_iptc; load_iptc()")
    plain = timed("import iptc")
    # measured on the reference machine: ~26 ms against ~210 ms
    assert fast * 3 < plain, (fast, plain)


def test_modprobe_is_skipped_only_for_modules_the_kernel_has(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def load_ko(name: str) -> tuple[int, None]:
        calls.append(name)
        return (0, None)

    guarded = _skip_loaded_modules(load_ko)
    monkeypatch.setattr(iptc_loader, "_loaded_kernel_modules", lambda: frozenset({"ip_tables"}))
    assert guarded("ip_tables") == (0, None) and calls == []
    guarded("ip6_tables")
    assert calls == ["ip6_tables"]
    monkeypatch.setattr(iptc_loader, "_loaded_kernel_modules", lambda: None)  # no module support at all
    guarded("ip6_tables")
    assert calls == ["ip6_tables"]


def _fake_library(path: Path) -> None:
    with open(sys.executable, "rb") as python:
        path.write_bytes(python.read(64))  # same ELF class and machine as this interpreter


def test_library_search_prefers_highest_version_of_this_abi(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for name in ("libfoo.so.1", "libfoo.so.12", "libfoo.so.2", "libfoo.so"):
        _fake_library(first / name)
    (first / "libbar.so.3").write_bytes(b"\x7fELF" + b"\x01" * 60)  # wrong ELF class/machine
    _fake_library(second / "libbar.so.1")
    search = LibrarySearch([str(first), str(second)])
    assert search.resolve("foo") == str(first / "libfoo.so.12")
    assert search.resolve("bar") == str(second / "libbar.so.1")
    assert search.resolve("libfoo.so.2") == str(first / "libfoo.so.2")
    assert search.resolve("missing") is None
    assert search.resolve("/abs/libfoo.so") is None


def test_ld_so_conf_includes_are_followed(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "ld.so.conf").write_text("# comment\n/opt/first\ninclude conf.d/*.conf\nhwcap 0 nosegneg\n")
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/third # trailing comment\n")
    (tmp_path / "conf.d" / "a.conf").write_text("/opt/second\n")
    assert _ld_so_conf_dirs(str(tmp_path / "ld.so.conf")) == ["/opt/first", "/opt/second", "/opt/third"]


@pytest.mark.root
def test_loaded_library_builds_rules_inside_a_namespace() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root for a network namespace")
    name = f"cht-load-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", name, sys.executable, "-c", textwrap.dedent("""
                from chains.rule import parse_args
                from chains.table import apply, read
                rule = parse_args("T", ["-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", "10.0.0.1:8080"])
                apply(4, "nat", lambda tx: (tx.ensure_chain("T"), tx.append(rule)))
                print(read(4, "nat", lambda tx: tx.rules_text("T")))
            """)],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        assert done.stdout.strip() == "['-A T -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:8080']"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
