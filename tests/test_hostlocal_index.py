"""host-local's reservation index (``hostlocal.index``): it gives the answers a full scan gives, follows
what other writers do to the data directory behind its back, rebuilds itself from anything it cannot
trust, goes away with the last reservation, and never fails an operation."""
from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from hostlocal import plugin, store as store_module
from hostlocal.allocator import allocate
from hostlocal.config import load_ipam_config
from hostlocal.index import INDEX_DIR, Index, looks_like_address, owner_key
from hostlocal.store import IndexedReservations, Owner, Snapshot, Store

ip = ipaddress.ip_address


@pytest.fixture
def index_root(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(tmp_path: Path, index_root: Path) -> Store:
    s = Store(str(tmp_path / "data" / "net1"), index_root=str(index_root))
    s.create()
    return s


def plain(store: Store) -> Store:
    """The same directory without an index: today's full scans, the reference answers."""
    return Store(store.state_dir)


def index_path(store: Store) -> Path:
    assert store.index_root is not None
    return Path(Index(store.index_root, os.path.abspath(store.state_dir)).path)


def saved(store: Store) -> dict[str, Any]:
    return json.loads(index_path(store).read_bytes())


def write_reservation(store: Store, name: str, content: bytes) -> None:
    """What the Go reference does: O_EXCL create, no index update."""
    fd = os.open(os.path.join(store.state_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, content)
    os.close(fd)


def reserve(store: Store, address: str, container_id: str, ifname: str = "eth0") -> None:
    """What ADD does: query the store (building a missing index), then reserve."""
    with store.locked():
        store.reservations(build_index=True)
        assert store.reserve(ip(address), Owner.attachment(container_id, ifname), 0) is not None


def release(store: Store, container_id: str, ifname: str = "eth0") -> list[str]:
    with store.locked():
        return sorted(str(a) for a in store.release(container_id, ifname))


def held(store: Store, container_id: str, ifname: str = "eth0") -> list[str]:
    with store.locked():
        return sorted(r.file_name for r in store.reservations().held_by(Owner.attachment(container_id, ifname)))


def populate(store: Store) -> None:
    """A bit of everything a data directory can hold."""
    for n in range(2, 12):
        write_reservation(store, f"10.0.0.{n}", f"ctr{n % 4}\r\neth{n % 2}".encode())
    write_reservation(store, "10.0.0.20", b"legacy\n")  # an older reference: bare container ID
    write_reservation(store, "fd00::5", b"ctr1\r\neth1")
    write_reservation(store, "FD00::9", b"upper\r\neth0")  # not the canonical name of its address
    write_reservation(store, "10.0.0.300", b"ctr1\r\neth0")  # looks like an address, is not one
    for stray in ("last_reserved_ip.0", ".last_reserved_ip.0.77.tmp", "notes", "lock"):
        Path(store.state_dir, stray).write_bytes(b"10.0.0.2")


# ---------------------------------------------------------------------------------------------
# Same answers as a full scan


def test_name_test_is_cheap_and_never_misses_an_address() -> None:
    for name in ("10.0.0.1", "fd00::1", "FD00::9", "::ffff:10.1.2.3", "10.0.0.300"):
        assert looks_like_address(name)
    for name in ("lock", "last_reserved_ip.0", ".last_reserved_ip.0.12.tmp", "notes", "cafe", "10.0.0.1~"):
        assert not looks_like_address(name)


def test_index_built_on_first_use_matches_a_full_scan(store: Store) -> None:
    populate(store)
    full = plain(store).snapshot()
    with store.locked():
        view = store.reservations(build_index=True)
        assert isinstance(view, IndexedReservations)
        owners = {r.owner for r in full.reservations.values()} | {Owner("ctr1", "eth7"), Owner("nobody", None)}
        for owner in owners:
            assert sorted(map(repr, view.held_by(owner))) == sorted(map(repr, full.held_by(owner)))
            assert sorted(map(repr, view.to_release(owner))) == sorted(map(repr, full.to_release(owner)))
        for version, network in ((4, "10.0.0.0/27"), (6, "fd00::/124")):
            for address in ipaddress.ip_network(network):
                assert view.taken(version, int(address)) == full.taken(version, int(address)), address
        assert store.reserve(ip("10.0.0.30"), Owner("new", "eth0"), 0) is not None  # which creates the file
    full = plain(store).snapshot()
    data = saved(store)
    assert data["format"] == 1 and data["store"] == os.path.abspath(store.state_dir)
    assert set(data["entries"]) == {r.file_name for r in full.reservations.values()}
    for name, (inode, ctime, key) in data["entries"].items():
        st = os.lstat(os.path.join(store.state_dir, name))
        assert (inode, ctime) == (st.st_ino, st.st_ctime_ns)
        assert key == owner_key(Path(store.state_dir, name).read_bytes())
    assert data["ignored"] == ["10.0.0.300"] and data["aliases"] == {"FD00::9": "fd00::9"}
    # No container ID is copied out of the data directory.
    assert b"ctr1" not in index_path(store).read_bytes()


def test_index_file_place_and_modes(store: Store, index_root: Path) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    path = index_path(store)
    assert path.parent == index_root / INDEX_DIR and path.name.endswith(".index")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert not [n for n in os.listdir(store.state_dir) if n not in ("10.0.0.2", "last_reserved_ip.0", "lock")]


def test_the_data_directory_is_byte_for_byte_the_same_with_and_without_index(tmp_path: Path) -> None:
    def run(root: str | None) -> dict[str, bytes]:
        data = tmp_path / ("indexed" if root else "plain")
        net = {"cniVersion": "1.0.0", "name": "net1",
               "ipam": {"type": "host-local", "dataDir": str(data), "subnet": "10.9.0.0/29"}}
        s = Store(str(data / "net1"), index_root=root)
        s.create()
        conf = load_ipam_config(net, {}, "1.0.0")
        with s.locked():
            for n in range(4):
                allocate(s, conf, f"c{n}", "eth0")
        with s.locked():
            s.release("c1", "eth0")
        with s.locked():
            allocate(s, conf, "c9", "eth0")
        return {p.name: p.read_bytes() for p in sorted((data / "net1").iterdir())}

    assert run(str(tmp_path / "state")) == run(None)


# ---------------------------------------------------------------------------------------------
# Following other writers (the Go reference keeps no index)


def test_files_added_removed_and_recreated_behind_its_back_are_picked_up(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    reserve(store, "10.0.0.4", "ctr3")
    write_reservation(store, "10.0.0.5", b"goctr\r\neth0")  # added
    os.unlink(os.path.join(store.state_dir, "10.0.0.3"))  # removed
    os.unlink(os.path.join(store.state_dir, "10.0.0.4"))  # re-created for someone else
    write_reservation(store, "10.0.0.4", b"other\r\neth0")
    assert held(store, "goctr") == ["10.0.0.5"]
    assert held(store, "ctr2") == [] and held(store, "ctr3") == []
    assert held(store, "other") == ["10.0.0.4"]
    assert set(saved(store)["entries"]) == {"10.0.0.2", "10.0.0.4", "10.0.0.5"}
    assert release(store, "goctr") == ["10.0.0.5"]


def test_a_recreated_file_that_got_the_old_inode_back_is_read_again(store: Store) -> None:
    """File systems reuse inode numbers: the change time tells the new file from the old one."""
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    path = os.path.join(store.state_dir, "10.0.0.3")
    os.unlink(path)
    write_reservation(store, "10.0.0.3", b"newctr\r\neth0")
    # Make the index believe the new file is the old one, as an inode number handed out again would.
    data = saved(store)
    data["entries"]["10.0.0.3"][0] = os.lstat(path).st_ino
    index_path(store).write_text(json.dumps(data))
    assert held(store, "newctr") == ["10.0.0.3"]
    assert held(store, "ctr2") == []


def test_an_unchanged_directory_costs_no_file_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 1,000 reservations, DEL / CHECK / ADD read the attachment's own files, nothing else."""
    for n in range(1000):
        write_reservation(store, str(ipaddress.IPv4Address(int(ip("10.1.0.2")) + n)), f"c{n}\r\neth0".encode())
    reserve(store, "10.2.0.2", "mine")  # first use: everything read once, the index created
    reads: list[str] = []
    original = store_module._read_reservation  # every reservation file is read through it
    monkeypatch.setattr(store_module, "_read_reservation", lambda path: reads.append(path) or original(path))
    assert held(store, "c17") == ["10.1.0.19"]
    assert release(store, "c18") == ["10.1.0.20"]
    with store.locked():  # an ADD: the duplicate check and the candidate walk read nothing
        view = store.reservations()
        assert view.held_by(Owner("new", "eth0")) == []
        assert view.taken(4, int(ip("10.1.0.2"))) and not view.taken(4, int(ip("10.2.0.3")))
    assert [os.path.basename(p) for p in reads] == ["10.1.0.19", "10.1.0.20"]


def test_a_file_reowned_in_place_is_not_released_for_its_old_owner(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    Path(store.state_dir, "10.0.0.2").write_bytes(b"ctr2\r\neth0")  # same inode; nobody does this, but still
    assert release(store, "ctr1") == []
    assert Path(store.state_dir, "10.0.0.2").read_bytes() == b"ctr2\r\neth0"


# ---------------------------------------------------------------------------------------------
# What it cannot trust, it rebuilds


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff{{ not json", b"[1, 2]", b'{"format": 99}',
    b'{"format": 1, "store": "/elsewhere", "directory": [1, 2, 3], "entries": {}}',
    b'{"format": 1, "store": "STORE", "directory": [1, 2, 3], "entries": {"10.0.0.2": "x"}}',
])
def test_a_corrupt_index_is_rebuilt(store: Store, content: bytes) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    good = saved(store)
    index_path(store).write_bytes(content.replace(b"STORE", os.path.abspath(store.state_dir).encode()))
    assert held(store, "ctr1") == ["10.0.0.2"]  # CHECK: rebuilt, and saved over the corrupt one
    assert saved(store) == good


def test_a_symlink_in_place_of_the_index_is_replaced_not_followed(store: Store, tmp_path: Path) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = index_path(store)
    path.unlink()
    path.symlink_to(victim)
    assert release(store, "ctr1") == ["10.0.0.2"]
    assert victim.read_text() == "precious"
    reserve(store, "10.0.0.3", "ctr2")
    assert not path.is_symlink() and victim.read_text() == "precious"


def test_index_is_removed_with_the_last_reservation(store: Store, index_root: Path) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "fd00::2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    leftover = index_path(store).parent / f".{index_path(store).name}.99999.tmp"  # a save that was killed
    leftover.write_text("{")
    assert release(store, "ctr1") == ["10.0.0.2", "fd00::2"]
    assert index_path(store).exists() and not leftover.exists()
    leftover.write_text("{")
    assert release(store, "ctr2") == ["10.0.0.3"]
    assert os.listdir(index_root) == []  # file, leftover and directory gone


def test_other_stores_indexes_are_left_alone(tmp_path: Path, index_root: Path) -> None:
    first, second = (Store(str(tmp_path / "data" / n), index_root=str(index_root)) for n in ("a", "b"))
    for s in (first, second):
        s.create()
        reserve(s, "10.0.0.2", "ctr1")
    assert index_path(first) != index_path(second)
    release(first, "ctr1")
    assert not index_path(first).exists() and index_path(second).exists()


def test_del_and_check_create_no_index_add_does(store: Store, index_root: Path) -> None:
    write_reservation(store, "10.0.0.2", b"ctr1\r\neth0")
    write_reservation(store, "10.0.0.3", b"ctr2\r\neth0")
    with store.locked():
        assert isinstance(store.reservations(), Snapshot)  # without an index: the full scan, as always
    assert held(store, "ctr1") == ["10.0.0.2"]
    assert release(store, "ctr1") == ["10.0.0.2"]
    assert not index_root.exists()
    with store.locked():  # an ADD that reserves nothing (exhausted) builds the index but saves none
        store.reservations(build_index=True)
    assert not index_root.exists()
    reserve(store, "10.0.0.4", "ctr3")
    assert set(saved(store)["entries"]) == {"10.0.0.3", "10.0.0.4"}


def test_the_last_del_without_index_removes_what_a_killed_first_save_left(store: Store, index_root: Path) -> None:
    write_reservation(store, "10.0.0.2", b"ctr1\r\neth0")
    leftover = index_path(store).parent / f".{index_path(store).name}.4242.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_text("{")
    write_reservation(store, "10.0.0.3", b"ctr2\r\neth0")
    assert release(store, "ctr1") == ["10.0.0.2"]
    assert leftover.exists()  # not the last reservation: the next save of the index removes it
    assert release(store, "ctr2") == ["10.0.0.3"]
    assert os.listdir(index_root) == []


def test_gc_drops_the_index(store: Store) -> None:
    reserve(store, "10.0.0.2", "keep")
    reserve(store, "10.0.0.3", "gone")
    with store.locked():
        assert store.collect_garbage([("keep", "eth0")]) == [ip("10.0.0.3")]
    assert not index_path(store).exists()
    assert held(store, "keep") == ["10.0.0.2"]


# ---------------------------------------------------------------------------------------------
# Unreadable entries: the full scan, and its warnings, as without an index


def _plant_unreadable(state_dir: str) -> None:
    os.mkfifo(os.path.join(state_dir, "10.0.0.20"))
    os.mkdir(os.path.join(state_dir, "10.0.0.21"))
    os.symlink("/etc/hostname", os.path.join(state_dir, "10.0.0.22"))
    Path(state_dir, "10.0.0.23").write_bytes(b"x" * (64 * 1024 + 1))


def test_an_unreadable_entry_falls_back_to_the_full_scan(store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    _plant_unreadable(store.state_dir)
    capfd.readouterr()
    plain(store).snapshot()
    expected = capfd.readouterr().err
    with store.locked():
        assert isinstance(store.reservations(), Snapshot)
    assert capfd.readouterr().err == expected
    assert release(store, "ctr1") == ["10.0.0.2"]
    assert capfd.readouterr().err == expected
    data = saved(store)["entries"]
    assert {name for name, value in data.items() if value[2] is None} == {f"10.0.0.{n}" for n in range(20, 24)}
    # Never handed out again.
    with store.locked():
        view = store.reservations()
        assert all(view.taken(4, int(ip(f"10.0.0.{n}"))) for n in range(20, 24))


def test_a_file_that_became_unreadable_is_reported_when_read_again(store: Store,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    Path(store.state_dir, "10.0.0.2").write_bytes(b"\xff" * (70 * 1024))  # in place: the index still says ctr1
    assert release(store, "ctr1") == []
    assert f"skipping reservation {os.path.join(store.state_dir, '10.0.0.2')}: larger than" in capfd.readouterr().err
    assert os.path.exists(os.path.join(store.state_dir, "10.0.0.2"))
    assert saved(store)["entries"]["10.0.0.2"][2] is None  # from now on: full scans


# ---------------------------------------------------------------------------------------------
# DEL releases exactly the attachment's files


def test_release_matches_container_and_ifname(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1", "eth0")
    reserve(store, "10.0.0.3", "ctr1", "eth1")
    reserve(store, "10.0.0.4", "ctr2", "eth0")
    reserve(store, "fd00::2", "ctr1", "eth0")
    assert release(store, "ctr1") == ["10.0.0.2", "fd00::2"]
    assert sorted(n for n in os.listdir(store.state_dir) if looks_like_address(n)) == ["10.0.0.3", "10.0.0.4"]
    assert set(saved(store)["entries"]) == {"10.0.0.3", "10.0.0.4"}


def test_release_falls_back_to_legacy_bare_id_files_only_when_nothing_else_matches(store: Store) -> None:
    reserve(store, "10.0.0.9", "other")
    write_reservation(store, "10.0.0.5", b"ctr1")
    write_reservation(store, "10.0.0.6", b" ctr1\n")
    assert held(store, "ctr1", "eth3") == ["10.0.0.5", "10.0.0.6"]
    reserve(store, "10.0.0.2", "ctr1")
    assert release(store, "ctr1") == ["10.0.0.2"]  # the current one only, as the reference
    assert release(store, "ctr1") == ["10.0.0.5", "10.0.0.6"]
    assert release(store, "ctr1") == []
    assert set(saved(store)["entries"]) == {"10.0.0.9"}


def test_duplicate_add_is_refused_through_the_index(tmp_path: Path, store: Store) -> None:
    net = {"cniVersion": "1.0.0", "name": "net1",
           "ipam": {"type": "host-local", "dataDir": str(tmp_path / "data"), "subnet": "10.0.0.0/29"}}
    conf = load_ipam_config(net, {}, "1.0.0")
    write_reservation(store, "10.0.0.2", b"goctr\r\neth0")
    write_reservation(store, "10.0.0.3", b"\xffunreadable-looking but fine")
    with store.locked():
        assert [str(a.address) for a in allocate(store, conf, "py", "eth0")] == ["10.0.0.4"]
    with store.locked(), pytest.raises(Exception, match="10.0.0.2 has been allocated to goctr"):
        allocate(store, conf, "goctr", "eth0")


# ---------------------------------------------------------------------------------------------
# Never failing an operation


def test_an_unusable_index_location_only_warns(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = Store(str(tmp_path / "data" / "net1"), index_root=str(blocker / "state"))
    s.create()
    reserve(s, "10.0.0.2", "ctr1")
    assert "host-local: not using the reservation index" in capfd.readouterr().err
    assert release(s, "ctr1") == ["10.0.0.2"]


def test_an_index_that_cannot_be_saved_only_warns(store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    in_the_way = index_path(store)
    (in_the_way / "something").mkdir(parents=True)  # a directory where the file goes: rename fails
    reserve(store, "10.0.0.2", "ctr1")
    assert "host-local: failed to update the reservation index" in capfd.readouterr().err
    assert held(store, "ctr1") == ["10.0.0.2"]
    assert release(store, "ctr1") == ["10.0.0.2"]


def test_a_symlinked_index_directory_is_not_used(store: Store, index_root: Path, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    index_root.mkdir()
    (index_root / INDEX_DIR).symlink_to(elsewhere)
    reserve(store, "10.0.0.2", "ctr1")
    assert "not using the reservation index" in capfd.readouterr().err
    assert release(store, "ctr1") == ["10.0.0.2"]
    assert os.listdir(elsewhere) == []


# ---------------------------------------------------------------------------------------------
# Through the plugin


def test_plugin_keeps_the_index_under_the_state_dir_and_leaves_nothing(tmp_path: Path) -> None:
    from types import SimpleNamespace

    state_dir = tmp_path / "state"
    config = {"cniVersion": "1.1.0", "name": "net1", "type": "bridge", "stateDir": str(state_dir),
              "ipam": {"type": "host-local", "dataDir": str(tmp_path / "data"), "subnet": "10.99.0.0/29"}}

    def req(cid: str) -> SimpleNamespace:
        return SimpleNamespace(container_id=cid, ifname="eth0", cni_args={}, config=config, cni_version="1.1.0")

    plugin.add(req("a"))
    plugin.add(req("b"))
    (index,) = (state_dir / INDEX_DIR).iterdir()
    assert set(json.loads(index.read_bytes())["entries"]) == {"10.99.0.2", "10.99.0.3"}
    plugin.check(req("a"))
    plugin.delete(req("a"))
    plugin.delete(req("b"))
    assert os.listdir(state_dir) == []


def test_plugin_with_a_relative_state_dir_works_without_index(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    config = {"cniVersion": "1.1.0", "name": "net1", "type": "host-local", "stateDir": "relative/state",
              "ipam": {"type": "host-local", "dataDir": str(tmp_path / "data"), "subnet": "10.99.0.0/29"}}
    req = SimpleNamespace(container_id="a", ifname="eth0", cni_args={}, config=config, cni_version="1.1.0")
    assert plugin.add(req)["ips"][0]["address"] == "10.99.0.2/29"
    assert "not indexing reservations" in capfd.readouterr().err
    plugin.delete(req)
