"""host-local IPAM config: canonicalisation (defaults, ordering of range sets, requested IPs,
routes) and validation with the reference's exact messages.

Where a message is meant to match the Debian 1.1.1 binary, the table entry is also replayed
against /usr/lib/cni/host-local (when installed) so drift from the reference shows up here.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
from typing import Any

import pytest

from cni.errors import INVALID_CONFIG, INVALID_ENV, CNIError
from hostlocal.config import DEFAULT_DATA_DIR, IPAMConfig, IPRange, RangeSet, load_ipam_config, state_dir_of

REFERENCE = "/usr/lib/cni/host-local"
ip = ipaddress.ip_address
net = ipaddress.ip_network


def conf(ipam: dict[str, Any] | None, version: str = "1.0.0", **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"cniVersion": version, "name": "mynet", "type": "bridge"}
    if ipam is not None:
        out["ipam"] = {"type": "host-local", **ipam}
    out.update(top)
    return out


def load(config: dict[str, Any], cni_args: dict[str, str] | None = None) -> IPAMConfig:
    return load_ipam_config(config, cni_args or {}, config.get("cniVersion", "1.0.0"))


def rng(subnet: str, start: str, end: str, gateway: str) -> IPRange:
    return IPRange(net(subnet), ip(start), ip(end), ip(gateway))


def sets_of(c: IPAMConfig) -> list[list[tuple[str, str, str, str]]]:
    return [[(str(r.subnet), str(r.start), str(r.end), str(r.gateway)) for r in s.ranges] for s in c.range_sets]


# ---------------------------------------------------------------------------------------------
# Good configs


def test_legacy_single_range_gets_defaults() -> None:
    c = load(conf({"subnet": "10.1.2.0/24"}))
    assert c.range_sets == (RangeSet((rng("10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1"),)),)
    assert c.network == "mynet" and c.data_dir == DEFAULT_DATA_DIR
    assert c.state_dir == "/var/lib/cni/networks/mynet"
    assert c.requested_ips == () and c.routes == () and c.resolv_conf == ""


def test_legacy_range_with_explicit_bounds_and_gateway() -> None:
    c = load(conf({"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.9", "rangeEnd": "10.1.2.20",
                   "gateway": "10.1.2.30"}))
    assert sets_of(c) == [[("10.1.2.0/24", "10.1.2.9", "10.1.2.20", "10.1.2.30")]]


def test_new_style_range_sets_keep_order_and_pools() -> None:
    c = load(conf({"ranges": [
        [{"subnet": "10.1.2.0/24"}, {"subnet": "10.1.3.0/24", "rangeStart": "10.1.3.100"}],
        [{"subnet": "2001:db8:1::/64"}],
    ]}))
    assert sets_of(c) == [
        [("10.1.2.0/24", "10.1.2.1", "10.1.2.254", "10.1.2.1"),
         ("10.1.3.0/24", "10.1.3.100", "10.1.3.254", "10.1.3.1")],
        [("2001:db8:1::/64", "2001:db8:1::1", "2001:db8:1:0:ffff:ffff:ffff:ffff", "2001:db8:1::1")],
    ]


def test_runtime_ip_ranges_then_legacy_then_ranges() -> None:
    c = load(conf({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.3.0.0/24"}]]},
                  runtimeConfig={"ipRanges": [[{"subnet": "10.2.0.0/24"}], [{"subnet": "fd00::/120"}]]}))
    subnets = [str(s.ranges[0].subnet) for s in c.range_sets]
    assert subnets == ["10.2.0.0/24", "fd00::/120", "10.1.0.0/24", "10.3.0.0/24"]


def test_disjoint_ranges_in_one_subnet_are_allowed() -> None:
    c = load(conf({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.50"},
                               {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.100"}]]}))
    assert str(c.range_sets[0]) == "10.1.0.2-10.1.0.50,10.1.0.100-10.1.0.254"


@pytest.mark.parametrize("subnet,start,end", [
    ("10.0.0.0/30", "10.0.0.1", "10.0.0.2"),
    ("fd00::/126", "fd00::1", "fd00::3"),
    ("192.168.0.0/16", "192.168.0.1", "192.168.255.254"),
])
def test_smallest_and_large_subnets(subnet: str, start: str, end: str) -> None:
    r = load(conf({"subnet": subnet})).range_sets[0].ranges[0]
    assert (str(r.start), str(r.end)) == (start, end)


def test_range_start_may_be_the_network_address() -> None:
    r = load(conf({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.0", "rangeEnd": "10.0.0.0"})).range_sets[0].ranges[0]
    assert (str(r.start), str(r.end)) == ("10.0.0.0", "10.0.0.0")


def test_version_020_allows_one_set_per_family() -> None:
    c = load(conf({"ranges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "2001:db8:1::/64"}]]}, version="0.2.0"))
    assert len(c.range_sets) == 2


def test_requested_ips_from_all_sources_in_order_without_duplicates() -> None:
    c = load(conf({"subnet": "10.1.2.0/24"},
                  args={"cni": {"ips": ["10.1.2.11", "11.11.11.11/8", "2001:db8:1::11"]}},
                  runtimeConfig={"ips": ["10.1.2.12/24", "10.1.2.10"]}),
             {"IP": "10.1.2.10,10.1.2.13/24", "IgnoreUnknown": "1", "K8S_POD_NAME": "p"})
    assert [str(a) for a in c.requested_ips] == [
        "10.1.2.10", "10.1.2.13", "10.1.2.11", "11.11.11.11", "2001:db8:1::11", "10.1.2.12"]


def test_cni_args_ip_single_with_prefix_and_empty() -> None:
    assert [str(a) for a in load(conf({"subnet": "10.1.2.0/24"}), {"IP": "10.1.2.7/24"}).requested_ips] == ["10.1.2.7"]
    assert load(conf({"subnet": "10.1.2.0/24"}), {"IP": ""}).requested_ips == ()


def test_ipv4_mapped_request_is_the_ipv4_address() -> None:
    c = load(conf({"subnet": "10.1.2.0/24"}, args={"cni": {"ips": ["::ffff:10.1.2.9"]}}))
    assert c.requested_ips == (ip("10.1.2.9"),)


def test_routes_are_canonicalised_and_extra_fields_kept() -> None:
    c = load(conf({"subnet": "10.1.2.0/24", "routes": [
        {"dst": "0.0.0.0/0"},
        {"dst": "192.168.0.0/16", "gw": "10.1.2.9", "mtu": 1400, "bogus": 1},
        {"dst": "2001:DB8:0::/48", "gw": "2001:db8::0:1"},
    ]}))
    assert c.routes == ({"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.2.9", "mtu": 1400},
                        {"dst": "2001:db8::/48", "gw": "2001:db8::1"})


def test_data_dir_and_resolv_conf() -> None:
    c = load(conf({"subnet": "10.1.2.0/24", "dataDir": "/run/cni/ipam", "resolvConf": "/etc/resolv.conf"}))
    assert (c.data_dir, c.resolv_conf, c.state_dir) == ("/run/cni/ipam", "/etc/resolv.conf", "/run/cni/ipam/mynet")
    assert state_dir_of(conf({"dataDir": "/x"})) == "/x/mynet"
    assert state_dir_of(conf({})) == "/var/lib/cni/networks/mynet"


# ---------------------------------------------------------------------------------------------
# Bad configs: (id, config, CNI_ARGS, expected code, expected message, same message as 1.1.1?)

BAD: list[tuple[str, dict[str, Any], dict[str, str], int, str, bool]] = [
    ("no-ipam", conf(None), {}, INVALID_CONFIG, "IPAM config missing 'ipam' key", True),
    ("null-ipam", {"cniVersion": "1.0.0", "name": "mynet", "ipam": None}, {}, INVALID_CONFIG,
     "IPAM config missing 'ipam' key", True),
    ("no-ranges", conf({}), {}, INVALID_CONFIG, "no IP ranges specified", True),
    ("empty-ranges", conf({"ranges": []}), {}, INVALID_CONFIG, "no IP ranges specified", True),
    ("empty-set", conf({"ranges": [[]]}), {}, INVALID_CONFIG, "invalid range set 0: empty range set", True),
    ("slash31", conf({"subnet": "10.0.0.0/31"}), {}, INVALID_CONFIG,
     "invalid range set 0: Network 10.0.0.0/31 too small to allocate from", True),
    ("slash32", conf({"subnet": "10.0.0.7/32"}), {}, INVALID_CONFIG,
     "invalid range set 0: Network 10.0.0.7/32 too small to allocate from", True),
    ("slash127", conf({"subnet": "fd00::/127"}), {}, INVALID_CONFIG,
     "invalid range set 0: Network fd00::/127 too small to allocate from", True),
    ("host-bits", conf({"subnet": "10.0.0.1/24"}), {}, INVALID_CONFIG,
     "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0",
     True),
    ("host-bits-v6", conf({"subnet": "fd00::5/64"}), {}, INVALID_CONFIG,
     "invalid range set 0: Network has host bits set. For a subnet mask of length 64 the network address is fd00::",
     True),
    ("start-outside", conf({"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}), {}, INVALID_CONFIG,
     "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24", True),
    ("end-outside", conf({"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.5"}), {}, INVALID_CONFIG,
     "invalid range set 0: RangeEnd 10.0.1.5 not in network 10.0.0.0/24", True),
    ("start-after-end", conf({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}), {},
     INVALID_CONFIG, "invalid range set 0: RangeStart 10.0.0.9 not in network 10.0.0.0/24", True),
    ("start-other-family", conf({"subnet": "10.0.0.0/24", "rangeStart": "fd00::1"}), {}, INVALID_CONFIG,
     "invalid range set 0: RangeStart fd00::1 not in network 10.0.0.0/24", True),
    ("start-after-default-end", conf({"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.255"}), {}, INVALID_CONFIG,
     "invalid range set 0: RangeStart 10.0.0.255 is after RangeEnd 10.0.0.254", False),
    ("gateway-outside", conf({"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}), {}, INVALID_CONFIG,
     "invalid range set 0: gateway 10.0.1.1 not in network 10.0.0.0/24", False),
    ("mixed-families", conf({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "fd00::/64"}]]}), {},
     INVALID_CONFIG, "invalid range set 0: mixed address families", True),
    ("overlap-in-set", conf({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]}), {},
     INVALID_CONFIG, "invalid range set 0: subnets 10.1.0.1-10.1.0.254 and 10.1.0.1-10.1.0.126 overlap", True),
    ("overlap-between-sets", conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.1.0.0/25"}]]}), {},
     INVALID_CONFIG, "range set 0 overlaps with 1", True),
    ("legacy-overlaps-ranges", conf({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.0/24"}]]}), {},
     INVALID_CONFIG, "range set 0 overlaps with 1", True),
    ("bad-second-set", conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/31"}]]}), {},
     INVALID_CONFIG, "invalid range set 1: Network 10.2.0.0/31 too small to allocate from", True),
    ("020-two-v4-sets", conf({"ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/24"}]]}, "0.2.0"), {},
     INVALID_CONFIG, "CNI version 0.2.0 does not support more than 1 address per family", True),
    ("bad-cidr", conf({"ranges": [[{"subnet": "garbage"}]]}), {}, INVALID_CONFIG,
     "invalid CIDR address: garbage", True),
    ("cidr-without-prefix", conf({"subnet": "10.0.0.0"}), {}, INVALID_CONFIG, "invalid CIDR address: 10.0.0.0", True),
    ("cidr-netmask-prefix", conf({"subnet": "10.0.0.0/255.255.255.0"}), {}, INVALID_CONFIG,
     "invalid CIDR address: 10.0.0.0/255.255.255.0", True),
    ("bad-range-start", conf({"subnet": "10.0.0.0/24", "rangeStart": "bogus"}), {}, INVALID_CONFIG,
     "invalid IP address: bogus", True),
    ("bad-gateway", conf({"subnet": "10.0.0.0/24", "gateway": "10.0.0.300"}), {}, INVALID_CONFIG,
     "invalid IP address: 10.0.0.300", True),
    ("range-without-subnet", conf({"ranges": [[{"rangeStart": "10.0.0.1"}]]}), {}, INVALID_CONFIG,
     "invalid range set 0: range has no subnet", False),
    ("ranges-not-sets", conf({"ranges": [{"subnet": "10.0.0.0/24"}]}), {}, INVALID_CONFIG,
     "ipam.ranges: each range set must be a list of range objects", False),
    ("unknown-cni-args", conf({"subnet": "10.0.0.0/24"}), {"FOO": "bar", "BAZ": "1"}, INVALID_ENV,
     'ARGS: unknown args ["FOO=bar" "BAZ=1"]', True),
    ("k8s-args-without-ignore", conf({"subnet": "10.0.0.0/24"}), {"K8S_POD_NAME": "a"}, INVALID_ENV,
     'ARGS: unknown args ["K8S_POD_NAME=a"]', True),
    ("bad-cni-args-ip", conf({"subnet": "10.0.0.0/24"}), {"IP": "bogus"}, INVALID_ENV,
     'ARGS: error parsing value of pair "IP=bogus": invalid IP address bogus', True),
    ("bad-cni-args-ip-in-list", conf({"subnet": "10.0.0.0/24"}), {"IP": "10.0.0.5,nope"}, INVALID_ENV,
     'ARGS: error parsing value of pair "IP=10.0.0.5,nope": invalid IP address nope', False),
    ("bad-args-ip", conf({"subnet": "10.0.0.0/24"}, args={"cni": {"ips": ["10.0.0.9", "bogus"]}}), {},
     INVALID_CONFIG, "invalid IP address bogus", True),
    ("bad-runtime-ip", conf({"subnet": "10.0.0.0/24"}, runtimeConfig={"ips": ["bogus"]}), {}, INVALID_CONFIG,
     "invalid IP address bogus", True),
    ("args-ips-not-list", conf({"subnet": "10.0.0.0/24"}, args={"cni": {"ips": "10.0.0.9"}}), {}, INVALID_CONFIG,
     "args.cni.ips must be a list of IP addresses", False),
    ("bad-route-dst", conf({"subnet": "10.0.0.0/24", "routes": [{"dst": "bogus"}]}), {}, INVALID_CONFIG,
     "invalid CIDR address: bogus", True),
    ("bad-route-gw", conf({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}), {},
     INVALID_CONFIG, "invalid IP address: x", False),
    ("missing-name", {"cniVersion": "1.0.0", "ipam": {"subnet": "10.0.0.0/24"}}, {}, INVALID_CONFIG,
     "missing network name", False),
    ("dotdot-name", {"cniVersion": "1.0.0", "name": "..", "ipam": {"subnet": "10.0.0.0/24"}}, {}, INVALID_CONFIG,
     "invalid characters found in network name", False),
    ("slash-name", {"cniVersion": "1.0.0", "name": "a/../../etc", "ipam": {"subnet": "10.0.0.0/24"}}, {},
     INVALID_CONFIG, "invalid characters found in network name", False),
    ("bad-data-dir", conf({"subnet": "10.0.0.0/24", "dataDir": 5}), {}, INVALID_CONFIG,
     "ipam.dataDir must be a path", False),
]


@pytest.mark.parametrize("config,cni_args,code,message", [b[1:5] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_rejected_with_exact_message(
    config: dict[str, Any], cni_args: dict[str, str], code: int, message: str
) -> None:
    with pytest.raises(CNIError) as info:
        load(config, cni_args)
    assert (info.value.code, info.value.msg) == (code, message)


def test_ignore_unknown_accepts_unknown_args() -> None:
    for flag in ("1", "true", "True"):
        load(conf({"subnet": "10.0.0.0/24"}), {"IgnoreUnknown": flag, "FOO": "bar"})


def _reference_message(config: dict[str, Any], cni_args: dict[str, str]) -> str:
    with tempfile.TemporaryDirectory(prefix="hlt-ref-") as data_dir:
        if isinstance(config.get("ipam"), dict):
            config = {**config, "ipam": {**config["ipam"], "dataDir": data_dir}}
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/nonexistent",
               "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": ";".join(f"{k}={v}" for k, v in cni_args.items()),
               "PATH": os.environ.get("PATH", "")}
        proc = subprocess.run([REFERENCE], input=json.dumps(config).encode(), env=env, capture_output=True,
                              timeout=30, check=False)
    assert proc.returncode != 0, proc.stdout
    return str(json.loads(proc.stdout)["msg"])


SAME_AS_REFERENCE = [b for b in BAD if b[5]]


@pytest.mark.skipif(not os.access(REFERENCE, os.X_OK), reason="Debian reference host-local not installed")
@pytest.mark.parametrize("config,cni_args,message", [(b[1], b[2], b[4]) for b in SAME_AS_REFERENCE],
                         ids=[b[0] for b in SAME_AS_REFERENCE])
def test_reference_binary_gives_the_same_message(
    config: dict[str, Any], cni_args: dict[str, str], message: str
) -> None:
    assert _reference_message(config, cni_args) == message
