"""The protocol layer on its own: env validation, error objects, version negotiation and conversion."""
from __future__ import annotations

import json
from typing import Any

import pytest

from cni import args, result, skel, types
from cni.errors import CNIError

CALLS: list[skel.Request] = []


def _add(req: skel.Request) -> dict[str, Any]:
    CALLS.append(req)
    return {"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": req.netns}],
            "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
            "routes": [{"dst": "0.0.0.0/0"}]}


def _fail(req: skel.Request) -> None:
    raise CNIError(11, "busy", "try later")


def _crash(req: skel.Request) -> None:
    raise RuntimeError("boom")


PLUGIN = skel.Plugin(name="dummy", add=_add, delete=lambda r: None, check=_fail, gc=_crash)
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "ctr1", "CNI_NETNS": "/run/netns/nonexistent-x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}


def run(env_overrides: dict[str, str | None] | None = None, config: Any = None,
        raw: bytes | None = None) -> tuple[dict[str, Any] | None, int]:
    env = dict(ENV)
    for k, v in (env_overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    stdin = raw if raw is not None else json.dumps(config if config is not None else
                                                   {"cniVersion": "1.0.0", "name": "net1", "type": "dummy"}).encode()
    out, code = skel.execute(PLUGIN, env, stdin)
    return (json.loads(out) if out else None), code


def test_add_prints_result_in_config_version() -> None:
    for ver in ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"):
        out, code = run(config={"cniVersion": ver, "name": "net1", "type": "dummy"})
        assert code == 0
        assert out is not None and out["cniVersion"] == ver
        types.validate_result(out, ver)


def test_add_020_result_has_ip4_block() -> None:
    out, code = run(config={"cniVersion": "0.2.0", "name": "net1"})
    assert code == 0 and out == {"cniVersion": "0.2.0",
                                 "ip4": {"ip": "10.1.0.2/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]}}


def test_version_command_lists_supported_versions() -> None:
    out, code = run({"CNI_COMMAND": "VERSION"}, raw=b"garbage")
    assert code == 0 and out is not None
    assert out["supportedVersions"] == list(PLUGIN.versions) and out["cniVersion"] == "1.1.0"


@pytest.mark.parametrize("supported", [("1.0.0",), ("0.3.1", "0.4.0", "1.0.0", "1.1.0")])
def test_version_answer_is_byte_for_byte_what_json_prints(supported: tuple[str, ...]) -> None:
    """VERSION is written by hand (no json import on that path): it must not drift from the JSON
    every other answer is printed as."""
    plugin = skel.Plugin(name="v", add=_add, delete=lambda r: None, versions=supported)
    out, code = skel.execute(plugin, {"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0
    assert out == json.dumps({"cniVersion": "1.1.0", "supportedVersions": list(supported)}, indent=4).encode() + b"\n"


@pytest.mark.parametrize("overrides,code,msg", [
    ({"CNI_COMMAND": "BOGUS"}, 4, "unknown CNI_COMMAND: BOGUS"),
    ({"CNI_CONTAINERID": None, "CNI_IFNAME": None}, 4, "required env variables [CNI_CONTAINERID,CNI_IFNAME] missing"),
    ({"CNI_PATH": None}, 4, "required env variables [CNI_PATH] missing"),
    ({"CNI_CONTAINERID": "bad id;-j ACCEPT"}, 4, "invalid characters in containerID"),
    ({"CNI_IFNAME": "a" * 16}, 4, "invalid CNI_IFNAME"),
    ({"CNI_IFNAME": "eth/0"}, 4, "invalid CNI_IFNAME"),
    ({"CNI_IFNAME": ".."}, 4, "invalid CNI_IFNAME"),
    ({"CNI_ARGS": "IP"}, 4, 'ARGS: invalid pair "IP"'),
])
def test_bad_environment(overrides: dict[str, str | None], code: int, msg: str) -> None:
    out, rc = run(overrides)
    assert rc == 1 and out is not None
    assert out["code"] == code and out["msg"].startswith(msg)


@pytest.mark.parametrize("raw,code,msg", [
    (b"{not json", 6, "error unmarshall network config"),
    (b"[1, 2]", 6, "error unmarshall network config"),
    (b'{"cniVersion": "1.0.0"}', 7, "missing network name"),
    (b'{"cniVersion": "1.0.0", "name": "a b"}', 7, "invalid characters found in network name"),
    (b'{"cniVersion": "9.9.9", "name": "n"}', 1, "incompatible CNI versions"),
    (b'{"cniVersion": 3, "name": "n"}', 1, "incompatible CNI versions"),
])
def test_bad_config(raw: bytes, code: int, msg: str) -> None:
    out, rc = run(raw=raw)
    assert rc == 1 and out is not None and out["code"] == code and out["msg"].startswith(msg)


def test_missing_cni_version_means_010() -> None:
    out, code = run(raw=b'{"name": "n"}')
    assert code == 0 and out is not None and out["cniVersion"] == "0.1.0" and "ip4" in out


def test_check_needs_040_and_gc_needs_110() -> None:
    out, _ = run({"CNI_COMMAND": "CHECK"}, config={"cniVersion": "0.3.1", "name": "n"})
    assert out is not None and out["code"] == 1 and out["msg"] == "config version does not allow CHECK"
    out, _ = run({"CNI_COMMAND": "GC"}, config={"cniVersion": "1.0.0", "name": "n"})
    assert out is not None and out["code"] == 1


def test_plugin_errors_keep_code_and_details_and_unexpected_ones_are_999() -> None:
    out, rc = run({"CNI_COMMAND": "CHECK"}, config={"cniVersion": "1.0.0", "name": "n"})
    assert rc == 1 and out == {"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "try later"}
    out, rc = run({"CNI_COMMAND": "GC"}, config={"cniVersion": "1.1.0", "name": "n"})
    assert rc == 1 and out is not None and out["code"] == 999 and out["msg"] == "boom"


def test_del_prints_nothing() -> None:
    out, rc = run({"CNI_COMMAND": "DEL", "CNI_NETNS": None})
    assert rc == 0 and out is None


def test_prev_result_is_lifted_to_canonical() -> None:
    CALLS.clear()
    prev = {"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}
    run(config={"cniVersion": "0.4.0", "name": "n", "prevResult": prev})
    assert CALLS[-1].prev_result == {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}


def test_refuses_plugins_own_netns() -> None:
    out, rc = run({"CNI_NETNS": "/proc/self/ns/net"})
    assert rc == 1 and out is not None and out["code"] == 8


def test_cni_args_unknown_keys() -> None:
    parsed = args.parse("IP=10.0.0.5;FOO=bar")
    with pytest.raises(CNIError) as err:
        args.check_known(parsed, {"IP"})
    assert err.value.msg == 'ARGS: unknown args ["FOO=bar"]' and err.value.code == 4
    args.check_known(args.parse("IgnoreUnknown=1;FOO=bar"), {"IP"})
    args.check_known(args.parse("IgnoreUnknown=true;FOO=bar"), {"IP"})


ONE_OF_EACH = {"cniVersion": "1.1.0",
               "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
                              {"name": "eth0", "mac": "aa:bb:cc:dd:ee:00", "sandbox": "/run/netns/x", "mtu": 1400}],
               "ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1", "interface": 1},
                       {"address": "fd00::2/64", "gateway": "fd00::1", "interface": 1}],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
               "dns": {"nameservers": ["10.0.0.53"]}}


@pytest.mark.parametrize("ver", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_round_trip_keeps_addresses_routes_dns(ver: str) -> None:
    lowered = result.from_canonical(ONE_OF_EACH, ver)
    types.validate_result(lowered, ver)
    back = result.to_canonical(lowered, ver)
    assert back["ips"] == ONE_OF_EACH["ips"] and back["routes"] == ONE_OF_EACH["routes"]
    assert back["dns"] == ONE_OF_EACH["dns"]
    assert [i["name"] for i in back["interfaces"]] == ["cni0", "eth0"]


def test_020_split_and_merge_by_family() -> None:
    lowered = result.from_canonical(ONE_OF_EACH, "0.2.0")
    assert lowered["ip4"] == {"ip": "10.0.0.2/24", "gateway": "10.0.0.1", "routes": [{"dst": "0.0.0.0/0"}]}
    assert lowered["ip6"]["routes"] == [{"dst": "::/0", "gw": "fd00::1"}]
    back = result.to_canonical(lowered, "0.2.0")
    assert [ip["address"] for ip in back["ips"]] == ["10.0.0.2/24", "fd00::2/64"]
    assert len(back["routes"]) == 2


def test_020_cannot_carry_two_addresses_of_a_family_or_none() -> None:
    two = dict(ONE_OF_EACH, ips=ONE_OF_EACH["ips"] + [{"address": "10.0.1.2/24"}])
    with pytest.raises(CNIError, match="does not support more than 1 address per family"):
        result.from_canonical(two, "0.2.0")
    with pytest.raises(CNIError, match="no valid IP addresses"):
        result.from_canonical({"cniVersion": "1.1.0", "interfaces": []}, "0.1.0")


def test_040_result_is_rejected_as_100() -> None:
    lowered = result.from_canonical(ONE_OF_EACH, "0.4.0")
    lowered["cniVersion"] = "1.0.0"
    with pytest.raises(ValueError):
        types.validate_result(lowered, "1.0.0")
