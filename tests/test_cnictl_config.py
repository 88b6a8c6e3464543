"""cnictl.config: finding network configurations by name and validating them like libcni."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cnictl import config
from cnictl.errors import ConfigError


def write(directory: Path, name: str, content: Any) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def conflist(name: str = "ctl-net", version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": [{"type": "bridge"}, {"type": "portmap"}], **extra}


def test_conflist_is_loaded_with_its_plugins_and_raw_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "10-net.conflist", conflist())
    net = config.find("ctl-net", str(tmp_path))
    assert net.name == "ctl-net"
    assert net.cni_version == "1.0.0"
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]
    assert net.raw == path.read_bytes()
    assert net.source == str(path)
    assert (net.disable_check, net.disable_gc) == (False, False)


def test_single_plugin_conf_is_wrapped_into_a_one_plugin_list(tmp_path: Path) -> None:
    plugin = {"cniVersion": "0.4.0", "name": "ctl-old", "type": "bridge", "bridge": "cni9"}
    write(tmp_path, "50-old.conf", plugin)
    net = config.find("ctl-old", str(tmp_path))
    assert net.cni_version == "0.4.0"
    assert net.plugins == (plugin,)
    assert json.loads(net.raw) == {"cniVersion": "0.4.0", "name": "ctl-old", "plugins": [plugin]}


def test_json_extension_is_a_single_plugin_config_too(tmp_path: Path) -> None:
    write(tmp_path, "a.json", {"cniVersion": "1.0.0", "name": "ctl-js", "type": "host-local"})
    assert config.find("ctl-js", str(tmp_path)).plugin_type(0) == "host-local"


def test_conflists_are_searched_before_single_files_and_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "00-first.conf", {"cniVersion": "1.0.0", "name": "ctl-dup", "type": "from-conf"})
    write(tmp_path, "20-b.conflist", {**conflist("ctl-dup"), "plugins": [{"type": "second"}]})
    write(tmp_path, "10-a.conflist", {**conflist("ctl-dup"), "plugins": [{"type": "first"}]})
    assert config.find("ctl-dup", str(tmp_path)).plugin_type(0) == "first"


def test_cni_versions_pick_the_highest_supported(tmp_path: Path) -> None:
    write(tmp_path, "n.conflist", conflist(version="0.4.0", cniVersions=["1.0.0", "9.9.9", "1.1.0"]))
    assert config.find("ctl-net", str(tmp_path)).cni_version == "1.1.0"


def test_cni_versions_may_stand_without_cni_version(tmp_path: Path) -> None:
    data = conflist()
    del data["cniVersion"]
    data["cniVersions"] = ["0.3.1", "1.0.0"]
    write(tmp_path, "n.conflist", data)
    assert config.find("ctl-net", str(tmp_path)).cni_version == "1.0.0"


def test_missing_version_means_0_1_0(tmp_path: Path) -> None:
    data = conflist()
    del data["cniVersion"]
    write(tmp_path, "n.conflist", data)
    assert config.find("ctl-net", str(tmp_path)).cni_version == "0.1.0"


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("true", True),
                                                  ("TRUE", True), ("false", False), ("False", False)])
def test_disable_flags_accept_booleans_and_strings(tmp_path: Path, value: object, expected: bool) -> None:
    write(tmp_path, "n.conflist", conflist(disableCheck=value, disableGC=value))
    net = config.find("ctl-net", str(tmp_path))
    assert (net.disable_check, net.disable_gc) == (expected, expected)


@pytest.mark.parametrize(("data", "message"), [
    (conflist(disableCheck="yes"), '"disableCheck" must be true or false, not "yes"'),
    (conflist(disableGC=1), '"disableGC" must be true or false, not 1'),
    (conflist(version="2.0.0"), 'unsupported cniVersion "2.0.0"'),
    (conflist(version="banana"), '"cniVersion" "banana" is not a version'),
    (conflist(cniVersions=["1.0.0", "x"]), '"cniVersions" entry 1 "x" is not a version'),
    (conflist(version="", cniVersions=["3.0.0"]), "none of the CNI versions [3.0.0] is supported"),
    (conflist(cniVersions="1.0.0"), '"cniVersions" must be a list of strings'),
    ({**conflist(), "plugins": []}, '"plugins" is empty'),
    ({**conflist(), "plugins": {"type": "bridge"}}, '"plugins" must be a list'),
    ({**conflist(), "plugins": [{"type": "bridge"}, {"ipMasq": True}]}, 'plugin 1: missing plugin "type"'),
    ({**conflist(), "plugins": ["bridge"]}, "plugin 0: must be a JSON object"),
    ({**conflist(), "plugins": [{"type": "../bin/sh"}]}, 'invalid plugin type "../bin/sh"'),
    ({**conflist(), "plugins": [{"type": "portmap", "capabilities": {"portMappings": "yes"}}]},
     '"capabilities" must map names to true or false'),
])
def test_invalid_lists_are_refused_with_a_message_naming_the_file(tmp_path: Path, data: dict[str, Any],
                                                                   message: str) -> None:
    path = write(tmp_path, "bad.conflist", data)
    with pytest.raises(ConfigError) as err:
        config.find("ctl-net", str(tmp_path))
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_invalid_network_name_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "n.conflist", conflist(name="-bad name"))
    with pytest.raises(ConfigError, match=r'invalid network name "-bad name": must match \^\[a-zA-Z0-9\]'):
        config.find("-bad name", str(tmp_path))


def test_file_that_is_not_json_stops_the_search(tmp_path: Path) -> None:
    write(tmp_path, "00-broken.conflist", "{not json")
    write(tmp_path, "10-good.conflist", conflist())
    with pytest.raises(ConfigError, match=r"00-broken.conflist: not valid JSON"):
        config.find("ctl-net", str(tmp_path))


def test_file_without_a_name_stops_the_search(tmp_path: Path) -> None:
    write(tmp_path, "00-anon.conflist", {"cniVersion": "1.0.0", "plugins": [{"type": "x"}]})
    with pytest.raises(ConfigError, match=r'00-anon.conflist: missing network "name"'):
        config.find("ctl-net", str(tmp_path))


def test_json_array_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "x.conf", "[1, 2]")
    with pytest.raises(ConfigError, match=r"x.conf: must be a JSON object, not list"):
        config.find("ctl-net", str(tmp_path))


def test_broken_list_of_another_network_does_not_hide_this_one(tmp_path: Path) -> None:
    write(tmp_path, "00-other.conflist", {"cniVersion": "7.0.0", "name": "ctl-other", "plugins": []})
    write(tmp_path, "10-mine.conflist", conflist())
    assert config.find("ctl-net", str(tmp_path)).name == "ctl-net"


def test_single_conf_without_type_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.conf", {"cniVersion": "1.0.0", "name": "ctl-net"})
    with pytest.raises(ConfigError, match=r'a.conf: missing plugin "type"'):
        config.find("ctl-net", str(tmp_path))


def test_not_found_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no network configurations found in .* \(the directory does not exist\)"):
        config.find("ctl-net", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"^no network configurations found in [^(]*$"):
        config.find("ctl-net", str(tmp_path))
    write(tmp_path, "n.conflist", conflist(name="ctl-other"))
    with pytest.raises(ConfigError, match=f'no network configuration with name "ctl-net" in {tmp_path}$'):
        config.find("ctl-net", str(tmp_path))


def test_plugins_from_the_network_subdirectory_are_appended(tmp_path: Path) -> None:
    write(tmp_path, "n.conflist", conflist())
    write(tmp_path, "ctl-net/20-b.conf", {"type": "tuning"})
    write(tmp_path, "ctl-net/10-a.conf", {"type": "firewall"})
    write(tmp_path, "ctl-net/ignored.json", {"type": "nope"})
    net = config.find("ctl-net", str(tmp_path))
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap", "firewall", "tuning"]


def test_load_only_inlined_plugins_ignores_the_subdirectory(tmp_path: Path) -> None:
    write(tmp_path, "n.conflist", conflist(loadOnlyInlinedPlugins=True))
    write(tmp_path, "ctl-net/10-a.conf", {"type": "firewall"})
    assert [p["type"] for p in config.find("ctl-net", str(tmp_path)).plugins] == ["bridge", "portmap"]


def test_list_without_plugins_key_takes_them_all_from_the_subdirectory(tmp_path: Path) -> None:
    write(tmp_path, "n.conflist", {"cniVersion": "1.1.0", "name": "ctl-net"})
    with pytest.raises(ConfigError, match=r'network "ctl-net" has no plugins'):
        config.find("ctl-net", str(tmp_path))
    write(tmp_path, "ctl-net/10-a.conf", {"type": "firewall"})
    assert config.find("ctl-net", str(tmp_path)).plugins == ({"type": "firewall"},)


def test_parse_list_from_bytes_and_conf_dir_from_env() -> None:
    net = config.parse_list(json.dumps(conflist(disableCheck="true")).encode())
    assert net.disable_check is True
    with pytest.raises(ConfigError, match=r'<config>: no "plugins" list'):
        config.parse_list(b'{"name": "ctl-net", "cniVersion": "1.0.0"}')
    assert config.conf_dir_from_env({"NETCONFPATH": "/x"}) == "/x"
    assert config.conf_dir_from_env({}) == config.DEFAULT_CONF_DIR


def test_load_file_reads_either_form(tmp_path: Path) -> None:
    listed = write(tmp_path, "n.conflist", conflist())
    single = write(tmp_path, "s.conf", {"cniVersion": "1.0.0", "name": "ctl-s", "type": "bridge"})
    assert config.load_file(str(listed)).name == "ctl-net"
    assert config.load_file(str(single)).plugins == ({"cniVersion": "1.0.0", "name": "ctl-s", "type": "bridge"},)
    assert os.path.basename(config.load_file(str(single)).source) == "s.conf"
