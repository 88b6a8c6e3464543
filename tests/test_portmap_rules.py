"""portmap's rule generation against exact iptables-save text, without the kernel."""
from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from chains.rule import render
from cni.errors import CNIError
from portmap import apply, config, names

REF_EXAMPLE = [  # ../shared/reference.md §2.4, the portmap lines
    '-A CNI-DN-e30d516c8208bc6dd27ee -s 10.88.0.0/16 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK',
    '-A CNI-DN-e30d516c8208bc6dd27ee -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK',
    '-A CNI-DN-e30d516c8208bc6dd27ee -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80',
]
REF_ENTRY = ('-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \\"refnet\\" id: \\"ctr1\\"" '
             '-m multiport --dports 8080 -j CNI-DN-e30d516c8208bc6dd27ee')


def conf(mappings: list[dict[str, Any]], **extra: Any) -> config.PortMapConf:
    return config.load({"cniVersion": "1.0.0", "name": "refnet", "runtimeConfig": {"portMappings": mappings},
                        **extra})


def chain_text(c: config.PortMapConf, family: int, address: str, cid: str = "ctr1") -> tuple[list[str], list[str]]:
    owned = apply.container_chain(c, "refnet", cid, family, ipaddress.ip_interface(address))
    return [render(r) for r in owned.body], [render(r) for r in owned.jump_rules()]


def test_chain_names_match_the_reference() -> None:
    assert names.dnat_chain("refnet", "ctr1") == "CNI-DN-e30d516c8208bc6dd27ee"
    from bridge.ipmasq_iptables import chain_name
    assert chain_name("refnet", "ctr1") == "CNI-e30d516c8208bc6dd27ee420"


def test_reference_example_line_for_line() -> None:
    body, entry = chain_text(conf([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]), 4, "10.88.0.5/16")
    assert body == REF_EXAMPLE
    assert entry == [REF_ENTRY]
    assert render(apply._setmark(0x2000).body[0]) == \
        '-A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000'
    assert render(apply._masq(0x2000).body[0]) == '-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE'
    assert [render(r) for r in apply._masq(0x2000).jump_rules()] == [
        '-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ']
    assert [render(r) for r in apply._toplevel().jump_rules()] == [
        '-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT',
        '-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT']


DUAL = [
    {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
    {"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "192.168.77.1"},
    {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
    {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "fd00:77::1"},
    {"hostPort": 9191, "containerPort": 91, "protocol": "tcp", "hostIP": "0.0.0.0"},
]


def test_dual_stack_mappings_skip_the_other_family() -> None:
    c = conf(DUAL)
    body4, entry4 = chain_text(c, 4, "10.88.0.6/16")
    body6, entry6 = chain_text(c, 6, "fd00:88::2/64")
    chain = "CNI-DN-e30d516c8208bc6dd27ee"
    assert f"-A {chain} -s 10.88.0.0/16 -d 192.168.77.1/32 -p tcp -m tcp --dport 8443 -j CNI-HOSTPORT-SETMARK" in body4
    assert f"-A {chain} -d 192.168.77.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.88.0.6:443" in body4
    assert f"-A {chain} -p udp -m udp --dport 5353 -j DNAT --to-destination 10.88.0.6:53" in body4
    assert f"-A {chain} -p tcp -m tcp --dport 9191 -j DNAT --to-destination 10.88.0.6:91" in body4
    assert not any("9090" in line for line in body4)
    assert len(body4) == 4 * 3  # mark, localhost mark, DNAT for each of the four v4 mappings
    assert body6 == [
        f"-A {chain} -s fd00:88::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00:88::2]:80",
        f"-A {chain} -s fd00:88::/64 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -p udp -m udp --dport 5353 -j DNAT --to-destination [fd00:88::2]:53",
        f"-A {chain} -s fd00:88::/64 -d fd00:77::1/128 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK",
        f"-A {chain} -d fd00:77::1/128 -p tcp -m tcp --dport 9090 -j DNAT --to-destination [fd00:88::2]:90",
    ]
    for entry in (entry4, entry6):
        assert [e.split("--dports ")[1] for e in entry] == [f"8080,8443,9090,9191 -j {chain}", f"5353 -j {chain}"]


def test_sixteen_ports_split_into_multiport_blocks_with_conditions_and_mark_bit() -> None:
    mappings = [{"hostPort": 6000 + i, "containerPort": 80, "protocol": "tcp"} for i in range(1, 17)]
    mappings.append({"hostPort": 7001, "containerPort": 53, "protocol": "udp"})
    c = conf(mappings, markMasqBit=5, conditionsV4=["!", "-s", "10.0.0.0/8"])
    _, entry = chain_text(c, 4, "10.88.0.5/16")
    comment = '-m comment --comment "dnat name: \\"refnet\\" id: \\"ctr1\\""'
    ports = ",".join(str(6000 + i) for i in range(1, 16))
    assert entry == [
        f"-A CNI-HOSTPORT-DNAT ! -s 10.0.0.0/8 -p tcp {comment} -m multiport --dports {ports} -j CNI-DN-e30d516c8208bc6dd27ee",
        f"-A CNI-HOSTPORT-DNAT ! -s 10.0.0.0/8 -p tcp {comment} -m multiport --dports 6016 -j CNI-DN-e30d516c8208bc6dd27ee",
        f"-A CNI-HOSTPORT-DNAT ! -s 10.0.0.0/8 -p udp {comment} -m multiport --dports 7001 -j CNI-DN-e30d516c8208bc6dd27ee",
    ]
    assert render(apply._setmark(c.mark).body[0]).endswith("-j MARK --set-xmark 0x20/0x20")


def test_snat_false_has_only_dnat_rules() -> None:
    body, _ = chain_text(conf([{"hostPort": 8080, "containerPort": 80}], snat=False), 4, "10.88.0.5/16")
    assert body == [REF_EXAMPLE[2]]


def test_external_set_mark_chain_and_masq_all() -> None:
    c = conf([{"hostPort": 8080, "containerPort": 80}], externalSetMarkChain="KUBE-MARK-MASQ", masqAll=True)
    body, _ = chain_text(c, 4, "10.88.0.5/16")
    assert body == ["-A CNI-DN-e30d516c8208bc6dd27ee -p tcp -m tcp --dport 8080 -j KUBE-MARK-MASQ", REF_EXAMPLE[2]]


def test_long_container_id_comment_fits_the_kernel_limit() -> None:
    cid = "a" * 300
    _, entry = chain_text(conf([{"hostPort": 8080, "containerPort": 80}]), 4, "10.88.0.5/16", cid=cid)
    comment = entry[0].split('--comment "')[1].split('" -m multiport')[0].replace('\\"', '"')
    assert len(comment.encode()) <= 255 and comment.endswith("...")


@pytest.mark.parametrize("bad,message", [
    ({"markMasqBit": 32}, "markMasqBit"),
    ({"markMasqBit": 1, "externalSetMarkChain": "X"}, "Cannot specify externalSetMarkChain and markMasqBit"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80}]}}, "hostPort"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": -1, "containerPort": 80}]}}, "hostPort"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 70000, "containerPort": 80}]}}, "hostPort"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 0}]}}, "containerPort"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]}}, "protocol"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80, "hostIP": "1.2.3"}]}}, "hostIP"),
    ({"runtimeConfig": {"portMappings": [{"hostPort": "80", "containerPort": 80}]}}, "hostPort"),
    ({"externalSetMarkChain": "-j ACCEPT"}, "externalSetMarkChain"),
    ({"conditionsV4": "-s 10.0.0.0/8"}, "conditionsV4"),
    ({"backend": "ebtables"}, "backend"),
])
def test_bad_config_names_the_field(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(CNIError) as err:
        config.load({"cniVersion": "1.0.0", "name": "n", **bad})
    assert err.value.code == 7 and message in err.value.msg


def test_conditions_that_cannot_be_represented_are_rejected() -> None:
    c = conf([{"hostPort": 8080, "containerPort": 80}], conditionsV4=["-j", "ACCEPT"])
    with pytest.raises(CNIError) as err:
        apply.validate(c, "refnet", "ctr1", {4: ipaddress.ip_interface("10.88.0.5/16")})
    assert err.value.code == 7


def test_container_addresses_skip_host_interfaces() -> None:
    prev = {"interfaces": [{"name": "host0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.0.0.1/24", "interface": 0}, {"address": "10.0.0.2/24", "interface": 1},
                    {"address": "2001:db8:1::2/64", "interface": 1}, {"address": "10.0.0.9/24"}]}
    found = config.container_addresses(prev, "eth0")
    assert str(found[4]) == "10.0.0.2/24" and str(found[6]) == "2001:db8:1::2/64"
    assert str(config.container_addresses({"ips": [{"address": "10.0.0.9/24"}]}, "eth0")[4]) == "10.0.0.9/24"
