"""host-local allocation: round-robin order, gateways, wrapping, requested IPs, duplicates,
exhaustion, rollback, and cost on a big busy range."""
from __future__ import annotations

import ipaddress
import os
import time
from pathlib import Path
from typing import Any

import pytest

from cni.errors import INTERNAL, INVALID_CONFIG, TRY_AGAIN_LATER, CNIError
from hostlocal.allocator import allocate, candidate_order
from hostlocal.config import IPAMConfig, RangeSet, load_ipam_config
from hostlocal.store import Store

ip = ipaddress.ip_address


def ipam(ranges: list[list[dict[str, str]]], data_dir: str, **extra: Any) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "net1",
            "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": ranges}, **extra}


def config(ranges: list[list[dict[str, str]]], data_dir: str = "/unused", cni_args: dict[str, str] | None = None,
           **extra: Any) -> IPAMConfig:
    return load_ipam_config(ipam(ranges, data_dir, **extra), cni_args or {}, "1.0.0")


def range_set(*ranges: dict[str, str]) -> RangeSet:
    return config([list(ranges)]).range_sets[0]


def order(rs: RangeSet, last: str | None = None, limit: int = 100) -> list[str]:
    out = []
    for value, r in candidate_order(rs, ip(last) if last else None):
        out.append(str(ipaddress.ip_address(value) if r.version == 4 else ipaddress.IPv6Address(value)))
        if len(out) == limit:
            break
    return out


SLASH29 = {"subnet": "10.99.0.0/29"}


# ---------------------------------------------------------------------------------------------
# Iteration order (pure)


def test_order_from_the_beginning_skips_gateway() -> None:
    assert order(range_set(SLASH29)) == ["10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5", "10.99.0.6"]


def test_order_from_the_middle_wraps_and_ends_with_the_last_reserved() -> None:
    assert order(range_set(SLASH29), "10.99.0.3") == ["10.99.0.4", "10.99.0.5", "10.99.0.6", "10.99.0.2", "10.99.0.3"]


def test_order_from_the_end_starts_over() -> None:
    assert order(range_set(SLASH29), "10.99.0.6") == ["10.99.0.2", "10.99.0.3", "10.99.0.4", "10.99.0.5", "10.99.0.6"]


def test_last_reserved_outside_the_set_is_ignored() -> None:
    assert order(range_set(SLASH29), "10.200.0.9")[:2] == ["10.99.0.2", "10.99.0.3"]
    assert order(range_set(SLASH29), "fd00::1")[:2] == ["10.99.0.2", "10.99.0.3"]


def test_other_gateway_makes_dot_one_allocatable() -> None:
    rs = range_set({"subnet": "10.99.0.0/29", "gateway": "10.99.0.4"})
    assert order(rs) == ["10.99.0.1", "10.99.0.2", "10.99.0.3", "10.99.0.5", "10.99.0.6"]


def test_order_moves_across_ranges_and_wraps() -> None:
    rs = range_set({"subnet": "10.1.0.0/29"}, {"subnet": "10.2.0.0/29", "rangeStart": "10.2.0.5"})
    full = ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.2.0.5", "10.2.0.6"]
    assert order(rs) == full
    # Last reserved at the end of the first range: continue at the second range's start.
    assert order(rs, "10.1.0.6") == full[5:] + full[:5]
    # Last reserved at the end of the last range: back to the first range.
    assert order(rs, "10.2.0.6") == full


def test_ipv6_order() -> None:
    rs = range_set({"subnet": "2001:db8:1::/126"})
    assert order(rs) == ["2001:db8:1::2", "2001:db8:1::3"]


# ---------------------------------------------------------------------------------------------
# Allocation against a real store


class Net:
    """A data dir plus helpers to run whole allocations like ADD does."""

    def __init__(self, data_dir: Path, ranges: list[list[dict[str, str]]]) -> None:
        self.data_dir = str(data_dir)
        self.ranges = ranges
        self.store = Store(os.path.join(self.data_dir, "net1"))
        self.store.create()

    def add(self, container_id: str, ifname: str = "eth0", cni_args: dict[str, str] | None = None,
            **extra: Any) -> list[str]:
        conf = config(self.ranges, self.data_dir, cni_args, **extra)
        with self.store.locked():
            return [a.result_ip()["address"] for a in allocate(self.store, conf, container_id, ifname)]

    def names(self) -> set[str]:
        return {n for n in os.listdir(self.store.state_dir) if n[0].isdigit() or ":" in n}


@pytest.fixture
def small(tmp_path: Path) -> Net:
    return Net(tmp_path, [[SLASH29]])


def failure(fn: Any, *args: Any, **kwargs: Any) -> CNIError:
    with pytest.raises(CNIError) as info:
        fn(*args, **kwargs)
    return info.value


def test_slash29_hands_out_dot2_to_dot6_then_is_exhausted(small: Net) -> None:
    assert [small.add(f"c{i}")[0] for i in range(1, 6)] == [f"10.99.0.{n}/29" for n in range(2, 7)]
    err = failure(small.add, "c6")
    assert err.code == TRY_AGAIN_LATER
    assert err.msg == "failed to allocate for range 0: no IP addresses available in range set: 10.99.0.1-10.99.0.6"


def test_round_robin_after_release(small: Net) -> None:
    assert small.add("c1") == ["10.99.0.2/29"]
    small.store.release("c1", "eth0")
    assert small.add("c2") == ["10.99.0.3/29"]  # not .2 again: crash loops do not reuse at once


def test_released_address_is_found_after_wrapping(small: Net) -> None:
    for i in range(1, 6):
        small.add(f"c{i}")
    small.store.release("c3", "eth0")
    assert small.add("c7") == ["10.99.0.4/29"]
    assert small.store.last_reserved(0) == ip("10.99.0.4")


def test_each_set_has_its_own_cursor(tmp_path: Path) -> None:
    net = Net(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]])
    assert net.add("dummy") == ["10.1.2.2/24", "2001:db8:1::2/64"]
    assert net.store.last_reserved(0) == ip("10.1.2.2")
    assert net.store.last_reserved(1) == ip("2001:db8:1::2")
    assert net.add("other") == ["10.1.2.3/24", "2001:db8:1::3/64"]


def test_duplicate_allocation_for_the_same_attachment_is_refused(small: Net) -> None:
    small.add("ctrx5")
    err = failure(small.add, "ctrx5")
    assert err.code == INTERNAL
    assert err.msg == ("failed to allocate for range 0: "
                       "10.99.0.2 has been allocated to ctrx5, duplicate allocation is not allowed")
    assert small.add("ctrx5", "eth1") == ["10.99.0.3/29"]  # another interface is another attachment


def test_legacy_reservation_of_the_container_counts_as_duplicate(small: Net) -> None:
    Path(small.store.state_dir, "10.99.0.5").write_bytes(b"old")
    assert "10.99.0.5 has been allocated to old" in failure(small.add, "old").msg


def test_requested_ip_is_reserved_and_moves_the_cursor(small: Net) -> None:
    assert small.add("x1", cni_args={"IP": "10.99.0.6"}) == ["10.99.0.6/29"]
    assert small.add("x2") == ["10.99.0.2/29"]


def test_requested_gateway_is_refused(small: Net) -> None:
    err = failure(small.add, "x1", cni_args={"IP": "10.99.0.1"})
    assert err.code == INVALID_CONFIG
    assert err.msg == "failed to allocate for range 0: requested ip 10.99.0.1 is subnet's gateway"


def test_requested_ip_already_taken(small: Net) -> None:
    small.add("x1", cni_args={"IP": "10.99.0.3"})
    err = failure(small.add, "x2", cni_args={"IP": "10.99.0.3"})
    assert err.code == TRY_AGAIN_LATER
    assert err.msg == ("failed to allocate for range 0: "
                       "requested IP address 10.99.0.3 is not available in range set 10.99.0.1-10.99.0.6")


@pytest.mark.parametrize("requested", ["10.99.0.0", "10.99.0.7", "10.99.1.9", "fd00::9"])
def test_requested_ip_outside_every_range_is_refused_and_nothing_leaks(small: Net, requested: str) -> None:
    err = failure(small.add, "x1", cni_args={"IP": requested})
    assert (err.code, err.msg) == (INVALID_CONFIG, f"failed to allocate all requested IPs: {requested}")
    assert small.names() == set()


def test_two_requested_ips_for_one_set_leave_one_unmatched(small: Net) -> None:
    err = failure(small.add, "x1", args={"cni": {"ips": ["10.99.0.3", "10.99.0.4"]}})
    assert err.msg == "failed to allocate all requested IPs: 10.99.0.4"
    assert small.names() == set()


def test_requested_ips_in_several_sets(tmp_path: Path) -> None:
    net = Net(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/24"}, {"subnet": "10.1.4.0/24"}],
                         [{"subnet": "2001:db8:1::/64"}]])
    got = net.add("c1", runtimeConfig={"ips": ["10.1.4.9/24", "2001:db8:1::99"]}, cni_args={"IP": "10.1.2.7"})
    assert got == ["10.1.2.7/24", "10.1.4.9/24", "2001:db8:1::99/64"]


def test_failure_in_a_later_set_releases_only_this_calls_reservations(tmp_path: Path) -> None:
    net = Net(tmp_path, [[{"subnet": "10.1.2.0/24"}], [{"subnet": "10.1.3.0/30"}]])
    Path(net.store.state_dir, "10.1.3.2").write_bytes(b"someone\r\neth0")
    # A reservation the attachment already holds outside these sets must survive the rollback.
    Path(net.store.state_dir, "10.9.9.9").write_bytes(b"c1\r\neth0")
    err = failure(net.add, "c1")
    assert err.msg == "failed to allocate for range 1: no IP addresses available in range set: 10.1.3.1-10.1.3.2"
    assert net.names() == {"10.1.3.2", "10.9.9.9"}


def test_busy_big_range_is_cheap(tmp_path: Path) -> None:
    """5000 reservations at the start of a /16: the allocator must not list the directory per
    candidate (that would be 5000 listings of 5000 entries)."""
    net = Net(tmp_path, [[{"subnet": "10.50.0.0/16"}]])
    first = int(ip("10.50.0.2"))
    for n in range(5000):
        Path(net.store.state_dir, str(ipaddress.IPv4Address(first + n))).write_bytes(b"busy\r\neth0")
    started = time.monotonic()
    got = net.add("newcomer")
    elapsed = time.monotonic() - started
    assert got == [f"{ipaddress.IPv4Address(first + 5000)}/16"]
    assert elapsed < 1.5, f"allocation took {elapsed:.2f}s"
