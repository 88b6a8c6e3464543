"""cnictl.cli: argument parsing helpers and the command as a process."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cnictl import cli
from cnictl.errors import CnictlError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(("text", "mapping"), [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:5353/UDP", {"hostPort": 53, "containerPort": 5353, "protocol": "udp"}),
    ("9000:9000/sctp@10.1.2.3", {"hostPort": 9000, "containerPort": 9000, "protocol": "sctp", "hostIP": "10.1.2.3"}),
    ("443:8443@2001:db8::1", {"hostPort": 443, "containerPort": 8443, "protocol": "tcp", "hostIP": "2001:db8::1"}),
    ("443:8443/tcp@[2001:DB8::1]", {"hostPort": 443, "containerPort": 8443, "protocol": "tcp",
                                    "hostIP": "2001:db8::1"}),
])
def test_publish_is_parsed_into_a_port_mapping(text: str, mapping: dict[str, object]) -> None:
    assert cli.parse_publish(text) == mapping


@pytest.mark.parametrize(("text", "message"), [
    ("8080", "expected HOST:CONTAINER"),
    ("0:80", 'port "0" is not a number from 1 to 65535'),
    ("8080:65536", 'port "65536"'),
    ("x:80", 'port "x"'),
    ("8080:80/icmp", "protocol must be one of tcp, udp, sctp"),
    ("8080:80@localhost", '"localhost" is not an IP address'),
])
def test_bad_publish_is_refused(text: str, message: str) -> None:
    with pytest.raises(CnictlError, match=message):
        cli.parse_publish(text)


def test_netns_names_and_paths() -> None:
    assert cli.resolve_netns("ctl-ns") == "/run/netns/ctl-ns"
    assert cli.resolve_netns("/proc/1/ns/net") == "/proc/1/ns/net"
    assert cli.resolve_netns("./ctl-ns") == os.path.join(os.getcwd(), "ctl-ns")
    with pytest.raises(CnictlError):
        cli.resolve_netns("")


def test_derived_container_id_is_stable_valid_and_distinct() -> None:
    first = cli.derive_container_id("/run/netns/ctl-a")
    assert first == cli.derive_container_id("/run/netns/ctl-a")
    assert first != cli.derive_container_id("/run/netns/ctl-b")
    assert first.startswith("cnictl-") and len(first) == len("cnictl-") + 20
    from cni.skel import valid_name

    assert valid_name(first)


def test_cni_args_come_from_the_flag_then_the_environment() -> None:
    assert cli.cni_args_from(None, None) is None
    assert cli.cni_args_from(None, "") is None
    assert cli.cni_args_from("", "A=1") == []  # an explicit empty --args means "none"
    assert cli.cni_args_from(None, "A=1;B=") == [("A", "1"), ("B", "")]
    assert cli.cni_args_from("K8S_POD_NAME=x;;IgnoreUnknown=1", "A=1") == [
        ("K8S_POD_NAME", "x"), ("IgnoreUnknown", "1")]
    for bad in ("A", "=1", "A=1=2"):
        with pytest.raises(CnictlError, match="invalid CNI_ARGS pair"):
            cli.cni_args_from(bad, None)


def test_capability_args_sources_and_conflicts() -> None:
    assert cli.capability_args_from(None, None, [], []) is None
    assert cli.capability_args_from('{"a": 1, "portMappings": []}', None, ["1:2"], ["b=[1]"]) == {
        "a": 1, "b": [1], "portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}]}
    assert cli.capability_args_from(None, '[{"hostPort": 5, "containerPort": 6}]', [], []) == {
        "portMappings": [{"hostPort": 5, "containerPort": 6}]}
    with pytest.raises(CnictlError, match="either with --port-mappings or with --publish"):
        cli.capability_args_from(None, "[]", ["1:2"], [])
    with pytest.raises(CnictlError, match="portMappings given twice"):
        cli.capability_args_from(None, None, ["1:2"], ["portMappings=[]"])
    with pytest.raises(CnictlError, match="CAP_ARGS must be a JSON object"):
        cli.capability_args_from("[1]", None, [], [])
    with pytest.raises(CnictlError, match="--cap mac: not valid JSON"):
        cli.capability_args_from(None, None, [], ["mac=0a:58:00:00:00:01"])
    with pytest.raises(CnictlError, match="--port-mappings must be a JSON list of objects"):
        cli.capability_args_from(None, '{"hostPort": 1}', [], [])


def test_valid_attachment_syntax() -> None:
    assert cli.parse_valid_attachment("ctr/eth0") == ("ctr", "eth0")
    for bad in ("ctr", "/eth0", "ctr/", "a/b/c"):
        with pytest.raises(CnictlError, match="expected CONTAINERID/IFNAME"):
            cli.parse_valid_attachment(bad)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "cnictl", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, check=False)


def test_command_reports_config_errors_as_text_with_status_1(tmp_path: os.PathLike[str]) -> None:
    proc = _run("add", "ctl-net", "ctl-ns", env={"NETCONFPATH": str(tmp_path)})
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"cnictl: no network configurations found in {tmp_path}\n"


def test_command_usage_errors_and_help() -> None:
    assert _run().returncode == 2
    helped = _run("--help")
    assert helped.returncode == 0
    for command in ("add", "check", "del", "gc", "status", "install"):
        assert command in helped.stdout
    add_help = _run("add", "--help").stdout
    for option in ("--ifname", "--container-id", "--args", "--port-mappings", "--publish", "--cap",
                   "--cni-path", "--conf-dir", "--cache-dir"):
        assert option in add_help
    cli_module = subprocess.run([sys.executable, "-m", "cnictl.cli", "status", "--help"], capture_output=True,
                                text=True, env={"PYTHONPATH": REPO}, check=False)
    assert cli_module.returncode == 0 and "NETWORK" in cli_module.stdout


def test_cli_start_up_does_not_import_pydantic() -> None:
    code = "import sys, cnictl.cli, cnictl.runtime; print('pydantic' in sys.modules, 'pyroute2' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": REPO},
                          check=True)
    assert proc.stdout.strip() == "False False"
