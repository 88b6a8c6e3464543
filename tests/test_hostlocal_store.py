"""host-local on-disk store: exact file format, release (with the legacy fallback), GC, and
robustness against entries that are not well-formed reservations."""
from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from cni.errors import IO_FAILURE, CNIError
from hostlocal.store import MAX_RESERVATION_BYTES, Owner, Store

ip = ipaddress.ip_address


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(str(tmp_path / "data" / "net1"))
    s.create()
    return s


def files(store: Store) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(store.state_dir)):
        path = os.path.join(store.state_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            out[name] = Path(path).read_bytes()
    return out


def reserve(store: Store, address: str, container_id: str, ifname: str = "eth0", set_index: int = 0) -> None:
    assert store.reserve(ip(address), Owner.attachment(container_id, ifname), set_index) is not None


def test_reservation_file_format_and_modes(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    with store.locked():
        pass
    assert files(store) == {"10.0.0.2": b"ctr1\r\neth0", "last_reserved_ip.0": b"10.0.0.2", "lock": b""}
    assert stat.S_IMODE(os.stat(os.path.join(store.state_dir, "10.0.0.2")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(store.state_dir, "last_reserved_ip.0")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.state_dir).st_mode) & 0o777 == 0o755 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_container_id_whitespace_is_trimmed_and_ipv6_names_are_canonical(store: Store) -> None:
    reserve(store, "2001:db8:1:0:0:0:0:5", "  ctr1 ", "net1", set_index=3)
    assert files(store) == {"2001:db8:1::5": b"ctr1\r\nnet1", "last_reserved_ip.3": b"2001:db8:1::5"}


def test_reserve_is_exclusive(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    assert store.reserve(ip("10.0.0.2"), Owner.attachment("ctr2", "eth0"), 0) is None
    assert files(store)["10.0.0.2"] == b"ctr1\r\neth0"


def test_last_reserved_round_trips_and_tolerates_garbage(store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    assert store.last_reserved(0) is None
    reserve(store, "10.0.0.7", "ctr1")
    assert store.last_reserved(0) == ip("10.0.0.7")
    Path(store.state_dir, "last_reserved_ip.1").write_bytes(b"not-an-ip")
    assert store.last_reserved(1) is None
    assert "last_reserved_ip.1" in capfd.readouterr().err


def test_release_matches_container_and_ifname(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1", "eth0")
    reserve(store, "10.0.0.3", "ctr1", "eth1")
    reserve(store, "10.0.0.4", "ctr2", "eth0")
    reserve(store, "fd00::2", "ctr1", "eth0", set_index=1)
    assert sorted(map(str, store.release("ctr1", "eth0"))) == ["10.0.0.2", "fd00::2"]
    assert set(files(store)) == {"10.0.0.3", "10.0.0.4", "last_reserved_ip.0", "last_reserved_ip.1"}


def test_release_is_idempotent_and_unknown_ids_succeed(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    assert store.release("ctr1", "eth0") == [ip("10.0.0.2")]
    assert store.release("ctr1", "eth0") == []
    assert store.release("nobody", "eth0") == []


def test_release_falls_back_to_legacy_bare_id_files(store: Store) -> None:
    Path(store.state_dir, "10.0.0.5").write_bytes(b"ctr1")
    Path(store.state_dir, "10.0.0.6").write_bytes(b"ctr1\n")
    assert sorted(map(str, store.release("ctr1", "eth0"))) == ["10.0.0.5", "10.0.0.6"]
    assert files(store) == {}


def test_legacy_files_stay_when_the_attachment_has_current_ones(store: Store) -> None:
    # The reference only falls back to bare-ID files when nothing matched id+ifname.
    Path(store.state_dir, "10.0.0.5").write_bytes(b"ctr1")
    reserve(store, "10.0.0.2", "ctr1")
    assert store.release("ctr1", "eth0") == [ip("10.0.0.2")]
    assert "10.0.0.5" in files(store)


def test_only_ip_named_files_are_reservations(store: Store) -> None:
    # A container whose ID looks like an IP must not take the cursor file with it.
    reserve(store, "10.0.0.2", "10.0.0.9")
    Path(store.state_dir, "last_reserved_ip.5").write_bytes(b"10.0.0.9")
    Path(store.state_dir, ".last_reserved_ip.0.123.tmp").write_bytes(b"10.0.0.9")
    Path(store.state_dir, "notes").write_bytes(b"10.0.0.9")
    assert store.release("10.0.0.9", "eth0") == [ip("10.0.0.2")]
    assert {"last_reserved_ip.5", ".last_reserved_ip.0.123.tmp", "notes"} <= set(files(store))


def test_snapshot_reads_owners(store: Store) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    Path(store.state_dir, "10.0.0.3").write_bytes(b"old")
    snap = store.snapshot()
    assert snap.reservations[ip("10.0.0.2")].owner == Owner("ctr1", "eth0")
    assert snap.reservations[ip("10.0.0.3")].owner == Owner("old", None)
    assert [str(r.address) for r in snap.held_by(Owner.attachment("old", "eth7"))] == ["10.0.0.3"]
    assert snap.occupied(4) == {int(ip("10.0.0.2")), int(ip("10.0.0.3"))}
    assert snap.occupied(6) == set()


def _plant_corrupt_entries(state_dir: str) -> None:
    os.mkfifo(os.path.join(state_dir, "10.0.0.20"))  # reading it without O_NONBLOCK would hang
    os.mkdir(os.path.join(state_dir, "10.0.0.21"))
    os.symlink("/etc/hostname", os.path.join(state_dir, "10.0.0.22"))
    Path(state_dir, "10.0.0.23").write_bytes(b"x" * (MAX_RESERVATION_BYTES + 1))
    Path(state_dir, "10.0.0.24").write_bytes(b"\xff\xfe\r\n\x00")  # undecodable, must not crash


def test_corrupt_entries_are_reported_but_do_not_block_release(store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    reserve(store, "10.0.0.2", "ctr1")
    reserve(store, "10.0.0.3", "ctr2")
    _plant_corrupt_entries(store.state_dir)
    assert store.release("ctr1", "eth0") == [ip("10.0.0.2")]
    err = capfd.readouterr().err
    for name in ("10.0.0.20", "10.0.0.21", "10.0.0.22", "10.0.0.23"):
        assert name in err
    for name in ("10.0.0.3", "10.0.0.20", "10.0.0.21", "10.0.0.22", "10.0.0.23", "10.0.0.24"):
        assert os.path.lexists(os.path.join(store.state_dir, name))
    assert not os.path.lexists(os.path.join(store.state_dir, "10.0.0.2"))


def test_unreadable_addresses_count_as_occupied(store: Store) -> None:
    _plant_corrupt_entries(store.state_dir)
    occupied = store.snapshot().occupied(4)
    assert {int(ip(f"10.0.0.{n}")) for n in range(20, 25)} <= occupied


# ---------------------------------------------------------------------------------------------
# GC


def test_gc_releases_reservations_not_in_the_valid_set(store: Store) -> None:
    reserve(store, "10.0.0.1", "keep-me")
    reserve(store, "10.0.0.2", "gone")
    assert store.collect_garbage([("keep-me", "eth0")]) == [ip("10.0.0.2")]
    assert set(files(store)) == {"10.0.0.1", "last_reserved_ip.0"}


def test_gc_matches_on_the_interface_too(store: Store) -> None:
    reserve(store, "10.0.0.1", "twoif", "eth0")
    reserve(store, "10.0.0.2", "twoif", "eth1")
    store.collect_garbage([("twoif", "eth0")])
    assert "10.0.0.1" in files(store) and "10.0.0.2" not in files(store)


def test_gc_with_empty_valid_set_frees_everything_but_bookkeeping(store: Store) -> None:
    reserve(store, "10.0.0.1", "a")
    reserve(store, "fd00::1", "b", set_index=1)
    with store.locked():
        store.collect_garbage([])
    assert set(files(store)) == {"last_reserved_ip.0", "last_reserved_ip.1", "lock"}


def test_gc_keeps_legacy_files_of_valid_containers_and_frees_stale_ones(store: Store) -> None:
    Path(store.state_dir, "10.0.0.9").write_bytes(b"legacy-id")
    Path(store.state_dir, "10.0.0.10").write_bytes(b"stale-id")
    store.collect_garbage([("legacy-id", "eth0")])
    assert set(files(store)) == {"10.0.0.9"}


def test_gc_frees_addresses_for_reuse(store: Store) -> None:
    reserve(store, "10.0.0.1", "leaked")
    store.collect_garbage([])
    reserve(store, "10.0.0.1", "newcomer")


def test_gc_reports_unreadable_entries_after_cleaning_the_rest(store: Store) -> None:
    reserve(store, "10.0.0.2", "gone")
    _plant_corrupt_entries(store.state_dir)
    with pytest.raises(CNIError) as info:
        store.collect_garbage([])
    assert info.value.code == IO_FAILURE
    assert info.value.msg.startswith("GC: ") and "10.0.0.20: not a regular file" in info.value.msg
    assert not os.path.lexists(os.path.join(store.state_dir, "10.0.0.2"))
    # Readable but undecodable content belongs to no valid attachment: freed.
    assert not os.path.lexists(os.path.join(store.state_dir, "10.0.0.24"))
    assert os.path.lexists(os.path.join(store.state_dir, "10.0.0.22"))  # symlink left alone
    assert os.path.exists("/etc/hostname")


def test_missing_state_dir_snapshot_is_empty(tmp_path: Path) -> None:
    s = Store(str(tmp_path / "nope"))
    assert not s.exists()
    assert s.snapshot().reservations == {}
    assert s.release("ctr1", "eth0") == []
