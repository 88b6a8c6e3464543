"""Validating a plugin's network config with pydantic and reporting problems as CNI errors.

Each message names the field and the value, e.g.
``invalid portmap config: runtimeConfig.portMappings.0.hostPort: Input should be less than or
equal to 65535 (got 70000)``.

Only the plugins' pydantic models (bridge.model, portmap.model, firewall.model) import this: they are
the fallback of each ``config.load``, whose fast path (cni.fastconf) reads plainly valid configs
without pydantic.
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cni.errors import INVALID_CONFIG, CNIError

M = TypeVar("M", bound=BaseModel)

_MAX_VALUE_TEXT = 80


class NetConf(BaseModel):
    """Keys every network config carries; plugin models extend it. Unknown keys are allowed (the spec lets
    runtimes pass them through) and ignored."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    cniVersion: str = "0.1.0"
    name: str
    type: str = ""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_TEXT else text[: _MAX_VALUE_TEXT - 3] + "..."


def describe(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False):
        msg = item["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if not item["loc"]:  # a rule across fields: the message names them
            parts.append(msg)
            continue
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {msg} (got {_shown(item.get('input'))})")
    return "; ".join(parts)


def parse(model: type[M], data: dict[str, Any], plugin: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise CNIError(INVALID_CONFIG, f"invalid {plugin} config: {describe(err)}") from None
