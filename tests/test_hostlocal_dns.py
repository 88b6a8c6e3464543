"""host-local resolv.conf parsing and the address helpers it shares the package with."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from cni.errors import IO_FAILURE, CNIError
from hostlocal.addresses import parse_cidr, parse_ip, parse_ip_ignoring_prefix
from hostlocal.dns import parse_resolv_conf, parse_resolv_conf_text


def test_simple_resolv_conf() -> None:
    assert parse_resolv_conf_text("nameserver 10.1.2.123\n") == {"nameservers": ["10.1.2.123"]}


def test_comments_and_blank_lines_are_skipped() -> None:
    text = "# comment\n\n  ; also a comment\nnameserver 10.1.2.123 # trailing\nnameserver 10.1.2.124\n"
    assert parse_resolv_conf_text(text) == {"nameservers": ["10.1.2.123", "10.1.2.124"]}


def test_all_fields() -> None:
    text = ("nameserver 10.1.2.123\nnameserver 10.1.2.124\ndomain example.com\ndomain last.example\n"
            "search example.com example.net\nsearch example.org\noptions four:4 five:5\noptions six\n")
    assert parse_resolv_conf_text(text) == {
        "nameservers": ["10.1.2.123", "10.1.2.124"], "domain": "last.example",
        "search": ["example.com", "example.net", "example.org"], "options": ["four:4", "five:5", "six"]}


@pytest.mark.parametrize("text", ["", "nameserver\n", "domain\n", "sortlist 1.2.3.4\n", "search ; nothing\n"])
def test_lines_without_values_or_unknown_directives_give_nothing(text: str) -> None:
    assert parse_resolv_conf_text(text) == {}


def test_reading_a_file_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\n")
    assert parse_resolv_conf(str(path)) == {"nameservers": ["192.0.2.53"]}
    with pytest.raises(CNIError) as info:
        parse_resolv_conf(str(tmp_path / "missing"))
    assert (info.value.code, info.value.msg) == (IO_FAILURE, f"open {tmp_path}/missing: no such file or directory")


@pytest.mark.parametrize("text,expected", [
    ("10.1.2.3", "10.1.2.3"), ("2001:DB8::A", "2001:db8::a"), ("::ffff:10.1.2.3", "10.1.2.3"),
])
def test_parse_ip(text: str, expected: str) -> None:
    assert str(parse_ip(text)) == expected


@pytest.mark.parametrize("text", ["", "10.1.2", "10.1.2.03", "10.1.2.3/24", "fe80::1%eth0", "x", None, 5])
def test_parse_ip_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_ip(text)


def test_parse_ip_ignoring_prefix() -> None:
    assert str(parse_ip_ignoring_prefix("10.1.2.3/24")) == "10.1.2.3"
    for bad in ("10.1.2.3/33", "10.1.2.3/", "10.1.2.3/x"):
        with pytest.raises(ValueError):
            parse_ip_ignoring_prefix(bad)


def test_parse_cidr_keeps_the_written_address() -> None:
    assert parse_cidr("10.1.2.3/24") == (ipaddress.ip_address("10.1.2.3"), ipaddress.ip_network("10.1.2.0/24"))
    for bad in ("10.1.2.0", "10.1.2.0/255.255.255.0", "10.1.2.0/24/1", "fe80::%1/64", "10.1.2.0/٣"):
        with pytest.raises(ValueError):
            parse_cidr(bad)
