"""Exact-type field readers for the configs' pydantic-free fast path.

A plugin run as its own short-lived process would spend ~100 ms importing pydantic and building its
models just to read a config that is almost always plainly valid. So each plugin's ``config.load``
first reads the config with these helpers, which accept only values the pydantic model would take
as they are, without any coercion: a real ``bool``, a real ``int`` (not a bool) inside the field's
range, a ``str``, a ``dict`` with string keys, a ``list`` of strings. Anything else, including
values pydantic would coerce (``"true"``, ``1``, ``"1500"``, ``1500.0``), raises :class:`Unsure`, and
``load`` hands the config to the pydantic model, which accepts or rejects it with the usual
field/value message. The fast path never produces an error of its own.

Everything here must stay cheap to import: no ``typing``, ``re`` or pydantic.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")


class Unsure(Exception):
    """The fast path cannot vouch for a value: the pydantic model decides instead."""


_MISSING = object()


def require_str_keys(config: dict[str, Any]) -> None:
    """The keys of an object read into a ``dict[str, Any]`` or kept as extra keys, as pydantic takes them:
    strings, and UTF-8 ones (a lone surrogate, which JSON's \\udXXX escapes can make, is refused)."""
    for key in config:
        if type(key) is not str or not (key.isascii() or _utf8(key)):
            raise Unsure(key)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def netconf_fields(config: dict[str, Any]) -> tuple[str, str, str]:
    """``cniVersion``, ``name`` (required) and ``type``, as cni.config.NetConf reads them."""
    name = config.get("name", _MISSING)
    if type(name) is not str:
        raise Unsure("name")
    return get_str(config, "cniVersion", "0.1.0"), name, get_str(config, "type", "")


def get_str(config: dict[str, Any], key: str, default: str) -> str:
    return _exact(config, key, str, default)


def get_optional_str(config: dict[str, Any], key: str) -> str | None:
    return _exact(config, key, str, None, nullable=True)


def get_bool(config: dict[str, Any], key: str, default: bool = False) -> bool:
    return _exact(config, key, bool, default)


def get_optional_bool(config: dict[str, Any], key: str) -> bool | None:
    return _exact(config, key, bool, None, nullable=True)


def _exact(config: dict[str, Any], key: str, kind: type, default: Any, nullable: bool = False) -> Any:
    """The value of ``key`` if it is exactly of type ``kind``; ``default`` when it is missing (or null,
    for a ``nullable`` field). type() rather than isinstance(): a subclass (True for int, a str
    subclass) is converted by pydantic, so pydantic decides."""
    value = config.get(key, _MISSING)
    if value is _MISSING or (nullable and value is None):
        return default
    if type(value) is not kind:
        raise Unsure(key)
    return value


def get_int(config: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = config.get(key, _MISSING)
    if value is _MISSING:
        return default
    return _int_in(key, value, low, high)


def require_int(config: dict[str, Any], key: str, low: int, high: int) -> int:
    return _int_in(key, config.get(key), low, high)


def get_optional_int(config: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = config.get(key)
    return None if value is None else _int_in(key, value, low, high)


def _int_in(key: str, value: object, low: int, high: int) -> int:
    # type() rather than isinstance(): True is an int, and pydantic's strict ints refuse it
    if type(value) is not int or not low <= value <= high:
        raise Unsure(key)
    return value


def get_dict(config: dict[str, Any], key: str) -> dict[str, Any]:
    """A ``dict[str, Any]`` field defaulting to ``{}``: a shallow copy, as pydantic returns."""
    value = config.get(key, _MISSING)
    if value is _MISSING:
        return {}
    return _str_dict(key, value)


def get_optional_dict(config: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = config.get(key)
    return None if value is None else _str_dict(key, value)


def _str_dict(key: str, value: object) -> dict[str, Any]:
    if type(value) is not dict:
        raise Unsure(key)
    require_str_keys(value)
    return dict(value)


def get_optional_str_list(config: dict[str, Any], key: str, max_length: int) -> list[str] | None:
    """A ``list[str] | None`` field with a maximum length: a copy, as pydantic returns."""
    value = config.get(key)
    if value is None:
        return None
    if type(value) is not list or len(value) > max_length:
        raise Unsure(key)
    for item in value:
        if type(item) is not str:
            raise Unsure(key)
    return list(value)


def get_list(config: dict[str, Any], key: str, max_length: int) -> list[Any]:
    """A ``list[...]`` field (None is not allowed) defaulting to ``[]``; the caller checks the items."""
    value = config.get(key, _MISSING)
    if value is _MISSING:
        return []
    if type(value) is not list or len(value) > max_length:
        raise Unsure(key)
    return value


# --- what every plugin's config module does with its reader ------------------------------------

def read_plain(config: object, read: Callable[[dict[str, Any]], T]) -> T | None:
    """``read(config)``, or None when the fast path cannot vouch for the config (the model decides)."""
    if type(config) is not dict:
        return None
    try:
        return read(config)
    except (Unsure, ValueError):  # ValueError: a validator refused the value, or it cannot be encoded
        return None


def load(config: dict[str, Any], read: Callable[[dict[str, Any]], T], model: str, plugin: str) -> object:
    """The config read without pydantic, else validated by the pydantic model ``model``
    ("package.module:Class", imported only now) with cni.config's field/value messages."""
    plain = read_plain(config, read)
    if plain is not None:
        return plain
    from cni.config import parse  # noqa: PLC0415 - pydantic, only for configs that need it

    return parse(model_class(model), config, plugin)


def model_class(model: str) -> Any:
    module_name, _, class_name = model.partition(":")
    return getattr(__import__(module_name, fromlist=[class_name]), class_name)


def lazy_models(module_name: str, models: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that hands out the pydantic models by name, importing them (and
    pydantic) only when somebody asks: ``models`` maps a name to "package.module:Class"."""
    def __getattr__(name: str) -> object:
        if name in models:
            return model_class(models[name])
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


class SlotsRepr:
    """``Name(field=value, ...)`` over ``__slots__``, for the plain config classes."""

    __slots__ = ()
    _repr_skip: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in self.__slots__ if key not in self._repr_skip)
        return f"{type(self).__name__}({fields})"
