"""cni.jsonlite must be indistinguishable from the json module, on success and on failure."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cni import jsonlite
from tests.netenv import REPO


def not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not a JSON value")


def outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[str, str]:
    try:
        return "ok", repr(fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - the type and message are what is compared
        return type(exc).__name__, str(exc)


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats() | st.tuples(st.integers())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(values)
def test_dumps_is_json_dumps_with_indent_4(value: Any) -> None:
    assert outcome(jsonlite.dumps_indented, value) == outcome(json.dumps, value, indent=4, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(values, st.sampled_from(["", " ", "\n", "\t \r\n", "\ufeff"]), st.sampled_from(["", " ", "\n", "x", "{}"]))
def test_loads_of_encoded_values_is_json_loads(value: Any, before: str, after: str) -> None:
    try:
        text = json.dumps(value, indent=2)
    except (TypeError, ValueError):
        return
    data = (before + text + after).encode()
    assert outcome(jsonlite.loads, data, not_json) == outcome(json.loads, data, parse_constant=not_json)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40) | st.text(alphabet='{}[]":,. \t\n0123456789eE+-truefalsnNIiy\\u\x00', max_size=40)
       .map(str.encode))
def test_loads_of_arbitrary_bytes_is_json_loads(data: bytes) -> None:
    assert outcome(jsonlite.loads, data, not_json) == outcome(json.loads, data, parse_constant=not_json)


def test_other_encodings_and_constants_go_through_json() -> None:
    for data in ('{"a": 1}'.encode("utf-16"), '{"a": 1}'.encode("utf-16-le"), b"\xef\xbb\xbf{}", b"[NaN]",
                 b"[-Infinity]", b"[1e999]", b"[" * 100000, b'"\xed\xa0\x80"'):
        assert outcome(jsonlite.loads, data, not_json) == outcome(json.loads, data, parse_constant=not_json)
    circular: list[Any] = []
    circular.append(circular)
    assert outcome(jsonlite.dumps_indented, circular)[0] == "ValueError"


def test_a_plugin_exec_does_not_import_json() -> None:
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from cni import skel; "
             "p = skel.Plugin('x', add=lambda r: {'cniVersion': '1.0.0', 'ips': [{'address': '10.0.0.1/24'}]}, "
             "delete=lambda r: None); "
             "env = {'CNI_COMMAND': 'ADD', 'CNI_CONTAINERID': 'c', 'CNI_NETNS': '/x', 'CNI_IFNAME': 'eth0', "
             "'CNI_PATH': '/x'}; "
             "out, code = skel.execute(p, env, b'{\"cniVersion\": \"1.0.0\", \"name\": \"n\", \"type\": \"x\"}')[:2]; "
             "print(code, 'json' in sys.modules, 're' in sys.modules); sys.stdout.write(out.decode())")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", probe, REPO], capture_output=True, check=True, text=True)
    first, _, printed = proc.stdout.partition("\n")
    assert first == "0 False False", proc.stderr
    assert printed == json.dumps({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24"}]}, indent=4) + "\n"
