"""host-local plugin handlers end to end: results, DEL / CHECK / GC / STATUS, the skeleton and
the executable, concurrency, and interoperability with the Debian reference binary (same store)."""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cni import skel
from cni.errors import INTERNAL, INVALID_CONFIG, NOT_AVAILABLE, TRY_AGAIN_LATER, CNIError
from hostlocal import plugin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "/usr/lib/cni/host-local"
needs_reference = pytest.mark.skipif(not os.access(REFERENCE, os.X_OK),
                                     reason="Debian reference host-local not installed")

RESOLV_CONF = """# a comment
; another comment
nameserver 192.0.2.1
nameserver 192.0.2.2   # trailing comment

domain example.com
search example.com example.net
search example.org
options ndots:2 edns0
"""


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The records state directory (where the store's index is kept) of these configs, which name no
    ``stateDir``: a temporary one, not the machine's default."""
    path = tmp_path_factory.mktemp("pycni-state")
    monkeypatch.setenv("PYCNI_STATE_DIR", str(path))
    return path


def net_config(data_dir: Path | str, ipam: dict[str, Any] | None = None, version: str = "1.1.0",
               **top: Any) -> dict[str, Any]:
    ipam = {"subnet": "10.99.0.0/29"} if ipam is None else ipam
    return {"cniVersion": version, "name": "net1", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": str(data_dir), **ipam}, **top}


def request(config: dict[str, Any], container_id: str = "ctr1", ifname: str = "eth0",
            cni_args: dict[str, str] | None = None, command: str = "ADD", **extra: Any) -> skel.Request:
    return skel.Request(command=command, container_id=container_id, ifname=ifname, cni_args=cni_args or {},
                        config=config, cni_version=config["cniVersion"], **extra)


def error_of(fn: Any, *args: Any) -> CNIError:
    with pytest.raises(CNIError) as info:
        fn(*args)
    return info.value


def state(data_dir: Path) -> dict[str, bytes]:
    directory = data_dir / "net1"
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())} if directory.exists() else {}


# ---------------------------------------------------------------------------------------------
# Handlers called directly (what the bridge does in-process)


def test_add_two_sets_with_dns_and_routes_then_del(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(RESOLV_CONF)
    config = net_config(tmp_path, {
        "ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.3.0/24"}], [{"subnet": "2001:db8:1::/64"}]],
        "resolvConf": str(resolv),
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
                   {"dst": "2001:db8:2::0/64", "gw": "2001:db8:3::1"}],
    })
    result = plugin.add(request(config, "dummy"))
    assert result == {
        "cniVersion": "1.1.0",
        "ips": [{"address": "10.1.2.2/24", "gateway": "10.1.2.1"},
                {"address": "2001:db8:1::2/64", "gateway": "2001:db8:1::1"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "192.168.0.0/16", "gw": "1.1.1.1"},
                   {"dst": "2001:db8:2::/64", "gw": "2001:db8:3::1"}],
        "dns": {"nameservers": ["192.0.2.1", "192.0.2.2"], "domain": "example.com",
                "search": ["example.com", "example.net", "example.org"], "options": ["ndots:2", "edns0"]},
    }
    assert state(tmp_path) == {"10.1.2.2": b"dummy\r\neth0", "2001:db8:1::2": b"dummy\r\neth0",
                               "last_reserved_ip.0": b"10.1.2.2", "last_reserved_ip.1": b"2001:db8:1::2", "lock": b""}
    plugin.delete(request(config, "dummy", command="DEL"))
    assert set(state(tmp_path)) == {"last_reserved_ip.0", "last_reserved_ip.1", "lock"}


def test_result_has_no_dns_or_routes_when_not_configured(tmp_path: Path) -> None:
    assert plugin.add(request(net_config(tmp_path))) == {
        "cniVersion": "1.1.0", "ips": [{"address": "10.99.0.2/29", "gateway": "10.99.0.1"}]}


def test_missing_resolv_conf_fails_before_allocating(tmp_path: Path) -> None:
    config = net_config(tmp_path, {"subnet": "10.99.0.0/29", "resolvConf": "/nonexistent/x"})
    err = error_of(plugin.add, request(config))
    assert (err.code, err.msg) == (5, "open /nonexistent/x: no such file or directory")
    assert state(tmp_path) == {}


def test_minimal_request_like_object_is_enough(tmp_path: Path) -> None:
    """The bridge contract: plain attributes, no skel.Request needed."""
    config = net_config(tmp_path)
    req = SimpleNamespace(container_id="c9", ifname="eth0", cni_args={}, config=config, cni_version="1.1.0")
    assert plugin.add(req)["ips"][0]["address"] == "10.99.0.2/29"
    plugin.check(req)
    plugin.delete(req)
    assert error_of(plugin.check, req).msg == "host-local: Failed to find address added by container c9"


def test_del_is_idempotent_and_does_not_create_state(tmp_path: Path) -> None:
    config = net_config(tmp_path / "never")
    plugin.delete(request(config, "nobody", command="DEL"))
    assert not (tmp_path / "never").exists()
    plugin.add(request(net_config(tmp_path)))
    for _ in range(2):
        plugin.delete(request(net_config(tmp_path), command="DEL"))


def test_del_with_invalid_config_fails_like_the_reference(tmp_path: Path) -> None:
    err = error_of(plugin.delete, request(net_config(tmp_path, {}), command="DEL"))
    assert (err.code, err.msg) == (INVALID_CONFIG, "no IP ranges specified")


def test_check_after_add_and_after_del(tmp_path: Path) -> None:
    config = net_config(tmp_path)
    plugin.add(request(config))
    plugin.check(request(config, command="CHECK"))
    err = error_of(plugin.check, request(config, "nope", command="CHECK"))
    assert (err.code, err.msg) == (INTERNAL, "host-local: Failed to find address added by container nope")
    assert "ctr1" in error_of(plugin.check, request(config, ifname="eth1", command="CHECK")).msg
    plugin.delete(request(config, command="DEL"))
    assert "ctr1" in error_of(plugin.check, request(config, command="CHECK")).msg


def test_check_accepts_legacy_reservations(tmp_path: Path) -> None:
    (tmp_path / "net1").mkdir()
    (tmp_path / "net1" / "10.99.0.4").write_bytes(b"old-ctr")
    plugin.check(request(net_config(tmp_path), "old-ctr", command="CHECK"))


def test_check_compares_prev_result_addresses_in_our_ranges(tmp_path: Path) -> None:
    config = net_config(tmp_path)
    plugin.add(request(config))
    good = {"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.2/29"}, {"address": "192.0.2.7/24"}]}
    plugin.check(request(config, command="CHECK", prev_result=good))
    bad = {"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.5/29"}]}
    err = error_of(plugin.check, request(config, command="CHECK", prev_result=bad))
    assert err.msg == "host-local: address 10.99.0.5 is not reserved for container ctr1"


def test_gc_keeps_valid_attachments_only(tmp_path: Path) -> None:
    config = net_config(tmp_path)
    for ctr in ("a", "b", "c"):
        plugin.add(request(config, ctr))
    gc_config = {**config, "cni.dev/valid-attachments": [{"containerID": "b", "ifname": "eth0"}]}
    plugin.gc(request(gc_config, "", "", command="GC"))
    assert set(state(tmp_path)) == {"10.99.0.3", "last_reserved_ip.0", "lock"}


def test_gc_accepts_the_legacy_key_and_refuses_a_missing_list(tmp_path: Path) -> None:
    config = net_config(tmp_path)
    plugin.add(request(config, "a"))
    err = error_of(plugin.gc, request(config, command="GC"))
    assert (err.code, err.msg) == (INVALID_CONFIG, "GC: missing cni.dev/valid-attachments")
    assert "10.99.0.2" in state(tmp_path)
    bad = {**config, "cni.dev/valid-attachments": [{"containerID": "a"}]}
    assert error_of(plugin.gc, request(bad, command="GC")).code == INVALID_CONFIG
    plugin.gc(request({**config, "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"}]}, command="GC"))
    assert "10.99.0.2" in state(tmp_path)


def test_gc_on_a_network_without_state_is_a_no_op(tmp_path: Path) -> None:
    plugin.gc(request({**net_config(tmp_path / "none"), "cni.dev/valid-attachments": []}, command="GC"))
    assert not (tmp_path / "none").exists()


def test_status_ready_when_data_dir_can_be_created(tmp_path: Path) -> None:
    plugin.status(request(net_config(tmp_path / "not" / "yet"), command="STATUS"))
    assert not (tmp_path / "not").exists()  # STATUS does not create anything


def test_status_not_available_when_data_dir_is_blocked(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = error_of(plugin.status, request(net_config(blocker / "data"), command="STATUS"))
    assert err.code == NOT_AVAILABLE
    assert err.msg == f"host-local: data directory {blocker}/data/net1 is not usable: {blocker} is not a directory"


# ---------------------------------------------------------------------------------------------
# Through the skeleton (in-process) and as an executable


def run_skel(config: dict[str, Any], command: str = "ADD", container_id: str = "ctr1",
             cni_args: str = "") -> tuple[dict[str, Any] | None, int]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": "/run/netns/hlt-none",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "CNI_ARGS": cni_args}
    out, code = skel.execute(plugin.PLUGIN, env, json.dumps(config).encode())
    return (json.loads(out) if out else None), code


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_skel_lowers_result_to_040_family(tmp_path: Path, version: str) -> None:
    out, code = run_skel(net_config(tmp_path, version=version))
    assert code == 0
    assert out == {"cniVersion": version, "ips": [{"version": "4", "address": "10.99.0.2/29", "gateway": "10.99.0.1"}],
                   "dns": {}}


def test_skel_020_result_and_errors_carry_codes(tmp_path: Path) -> None:
    out, code = run_skel(net_config(tmp_path, version="0.2.0"))
    assert (code, out) == (0, {"cniVersion": "0.2.0", "ip4": {"ip": "10.99.0.2/29", "gateway": "10.99.0.1"}})
    out, code = run_skel(net_config(tmp_path), cni_args="FOO=bar")
    assert code == 1 and out is not None and (out["code"], out["msg"]) == (4, 'ARGS: unknown args ["FOO=bar"]')


def test_skel_exhaustion_is_try_again_later(tmp_path: Path) -> None:
    for n in range(5):
        assert run_skel(net_config(tmp_path), container_id=f"c{n}")[1] == 0
    out, code = run_skel(net_config(tmp_path), container_id="c5")
    assert code == 1 and out is not None
    assert (out["code"], out["msg"]) == (
        TRY_AGAIN_LATER, "failed to allocate for range 0: no IP addresses available in range set: 10.99.0.1-10.99.0.6")


def run_executable(config: dict[str, Any], command: str, container_id: str = "ctr1",
                   binary: list[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": "/run/netns/hlt-none",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin", "PATH": os.environ.get("PATH", ""),
           "PYTHONPATH": REPO, "PYCNI_STATE_DIR": os.environ["PYCNI_STATE_DIR"]}
    return subprocess.run(binary or [sys.executable, "-m", "hostlocal"], input=json.dumps(config).encode(),
                          env=env, capture_output=True, timeout=60, check=False)


def test_executable_add_check_del(tmp_path: Path) -> None:
    config = net_config(tmp_path, version="1.0.0")
    proc = run_executable(config, "ADD")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["ips"] == [{"address": "10.99.0.2/29", "gateway": "10.99.0.1"}]
    assert run_executable(config, "CHECK").returncode == 0
    proc = run_executable(config, "DEL")
    assert (proc.returncode, proc.stdout) == (0, b"")
    assert "10.99.0.2" not in state(tmp_path)


# ---------------------------------------------------------------------------------------------
# Concurrency


def _add_in_child(args: tuple[str, str]) -> str:
    data_dir, container_id = args
    config = net_config(data_dir, {"subnet": "10.77.0.0/24", "rangeStart": "10.77.0.10", "rangeEnd": "10.77.0.39"})
    try:
        return str(plugin.add(request(config, container_id))["ips"][0]["address"])
    except CNIError as err:
        return f"error {err.code}: {err.msg}"


def test_thirty_parallel_processes_get_distinct_addresses(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(30) as pool:
        got = pool.map(_add_in_child, [(str(tmp_path), f"ctr{n}") for n in range(30)], chunksize=1)
    assert sorted(got) == sorted(f"10.77.0.{n}/24" for n in range(10, 40))
    reservations = {k: v for k, v in state(tmp_path).items() if k.startswith("10.")}
    assert sorted(reservations.values()) == sorted(f"ctr{n}\r\neth0".encode() for n in range(30))


def test_one_more_process_than_addresses_gets_exhaustion(tmp_path: Path) -> None:
    with multiprocessing.get_context("fork").Pool(31) as pool:
        got = pool.map(_add_in_child, [(str(tmp_path), f"ctr{n}") for n in range(31)], chunksize=1)
    errors = [g for g in got if g.startswith("error")]
    assert errors == ["error 11: failed to allocate for range 0: no IP addresses available in range set: "
                      "10.77.0.10-10.77.0.39"]
    assert len(set(got) - set(errors)) == 30


# ---------------------------------------------------------------------------------------------
# Interoperability with the Go reference on one store


@needs_reference
def test_reference_and_python_share_the_store(tmp_path: Path) -> None:
    config = net_config(tmp_path, version="1.0.0")
    ref = run_executable(config, "ADD", "goctr", [REFERENCE])
    assert ref.returncode == 0, ref.stdout
    assert json.loads(ref.stdout)["ips"][0]["address"] == "10.99.0.2/29"
    # Ours continues round-robin after the reference's cursor and sees its reservation.
    assert plugin.add(request(config, "pyctr"))["ips"][0]["address"] == "10.99.0.3/29"
    assert "10.99.0.2 has been allocated to goctr" in error_of(plugin.add, request(config, "goctr")).msg
    plugin.check(request(config, "goctr", command="CHECK"))
    assert run_executable(config, "CHECK", "pyctr", [REFERENCE]).returncode == 0
    # Each releases the other's reservation.
    plugin.delete(request(config, "goctr", command="DEL"))
    assert run_executable(config, "DEL", "pyctr", [REFERENCE]).returncode == 0
    assert set(state(tmp_path)) == {"last_reserved_ip.0", "lock"}
    assert state(tmp_path)["last_reserved_ip.0"] == b"10.99.0.3"


@needs_reference
def test_reference_and_python_in_parallel_never_collide(tmp_path: Path) -> None:
    config = net_config(tmp_path, {"subnet": "10.88.0.0/24"}, version="1.0.0")
    env_base = {"CNI_COMMAND": "ADD", "CNI_NETNS": "/run/netns/hlt-none", "CNI_IFNAME": "eth0",
                "CNI_PATH": "/opt/cni/bin", "PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO,
                "PYCNI_STATE_DIR": os.environ["PYCNI_STATE_DIR"]}
    procs = []
    for n in range(20):
        binary = [REFERENCE] if n % 2 else [sys.executable, "-m", "hostlocal"]
        proc = subprocess.Popen(binary, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**env_base, "CNI_CONTAINERID": f"c{n}"})
        procs.append(proc)
    addresses = []
    for proc in procs:
        out, err = proc.communicate(json.dumps(config).encode(), timeout=60)
        assert proc.returncode == 0, out + err
        addresses.append(json.loads(out)["ips"][0]["address"])
    assert len(set(addresses)) == 20


@pytest.mark.root
def test_status_not_available_on_a_read_only_file_system(tmp_path: Path) -> None:
    """A read-only tmpfs mounted in a private mount namespace (gone when the child exits)."""
    mount_point = tmp_path / "ro"
    mount_point.mkdir()
    probe = (
        "import json, sys\n"
        "from cni import skel\n"
        "from cni.errors import CNIError\n"
        "from hostlocal import plugin\n"
        f"config = {{'cniVersion': '1.1.0', 'name': 'net1', 'ipam': {{'dataDir': '{mount_point}/data'}}}}\n"
        "try:\n"
        "    plugin.status(skel.Request(command='STATUS', config=config, cni_version='1.1.0'))\n"
        "    print(json.dumps({'code': 0}))\n"
        "except CNIError as err:\n"
        "    print(json.dumps({'code': err.code, 'msg': err.msg}))\n"
    )
    script = 'mount -t tmpfs -o ro hlt-ro "$1" && exec "$2" -c "$3"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(mount_point), sys.executable, probe],
                          env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "code": NOT_AVAILABLE,
        "msg": f"host-local: data directory {mount_point}/data/net1 is not usable: {mount_point} is not writable"}


def test_delegation_in_process_and_by_exec_agree(tmp_path: Path) -> None:
    """What bridge does: cni.invoke.delegate finds our launcher in CNI_PATH and runs PLUGIN
    in-process; forcing exec must give the same result and the same store."""
    from cni import invoke

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "host-local"
    launcher.write_text(f"#!{sys.executable}\n{invoke.ENTRY_MARKER.decode()}hostlocal.plugin:PLUGIN\n"
                        f"import sys\nsys.path.insert(0, {REPO!r})\nfrom hostlocal.plugin import main\nmain()\n")
    launcher.chmod(0o755)
    results = {}
    for mode in ("1", "0"):
        data_dir = tmp_path / f"data{mode}"
        config = net_config(data_dir, version="1.0.0")
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/hlt-none",
               "CNI_IFNAME": "eth0", "CNI_PATH": str(bin_dir), invoke.IN_PROCESS_ENV: mode,
               "PYCNI_STATE_DIR": os.environ["PYCNI_STATE_DIR"]}
        req = skel.Request(command="ADD", container_id="ctr1", ifname="eth0", config=config, cni_version="1.0.0",
                           path=[str(bin_dir)], env=env, stdin=json.dumps(config).encode())
        results[mode] = (invoke.delegate(req, "host-local", "ADD"), state(data_dir))
        with pytest.raises(CNIError) as info:
            invoke.delegate(req, "host-local", "ADD")
        assert "duplicate allocation is not allowed" in info.value.msg
        invoke.delegate(req, "host-local", "DEL")
        assert "10.99.0.2" not in state(data_dir)
    assert results["1"] == results["0"]
    assert results["1"][0] == {"cniVersion": "1.1.0", "ips": [{"address": "10.99.0.2/29", "gateway": "10.99.0.1"}]}
