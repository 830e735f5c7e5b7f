"""Typed, validated configuration dataclasses, serialisable to and from dicts, JSON and YAML.

Every configuration object in insitu derives from :class:`Config`. A config is a plain dataclass
whose ``validate`` method raises :class:`ConfigError` with a message that names the field, the bad
value and what to change. Configs nest (a tile config holds a device config and IO configs);
polymorphic fields (which device model) are serialised with a ``type`` key naming the class.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Config", "ConfigError", "register_config", "config_from_dict"]


class ConfigError(ValueError):
    """A configuration value is invalid. The message says which field and what to change."""


# name -> class, for configs that appear polymorphically (device models, update rules).
_REGISTRY: dict[str, type["Config"]] = {}


def register_config(cls: type["Config"]) -> type["Config"]:
    """Class decorator: make ``cls`` constructible from a dict with ``{"type": cls.__name__}``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _closest(name: str, candidates) -> str:
    match = difflib.get_close_matches(name, list(candidates), n=1)
    return f" Did you mean '{match[0]}'?" if match else ""


@dataclasses.dataclass
class Config:
    """Base class: validation on construction, conversion to/from dicts, JSON and YAML."""

    polymorphic: ClassVar[bool] = False
    #: Field name -> default: left out of :meth:`to_dict` while the field holds that default.
    _OMIT_AT_DEFAULT: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_validated", True)

    def __setattr__(self, name: str, value: Any) -> None:
        # A field changed after construction is validated as at construction (config.dw_min = -5
        # would otherwise be accepted and fail, or silently mislead, much later). A refused value
        # leaves the config as it was. Several fields that must change together: use replace().
        if not self.__dict__.get("_validated") or name not in {f.name for f in dataclasses.fields(self)}:
            object.__setattr__(self, name, value)
            return
        old = self.__dict__.get(name)
        object.__setattr__(self, name, value)
        try:
            self.validate()
        except BaseException:
            object.__setattr__(self, name, old)
            raise

    # -- validation helpers -------------------------------------------------------------------
    def validate(self) -> None:  # overridden by subclasses
        """Raise :class:`ConfigError` if a field is out of range."""

    def _fail(self, field: str, message: str) -> None:
        value = getattr(self, field, None)
        raise ConfigError(f"{type(self).__name__}.{field} = {value!r}: {message}")

    def _check_finite(self, *fields: str) -> None:
        for field in fields:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                self._fail(field, f"must be a number, got {type(value).__name__}.")
            if not math.isfinite(value):
                self._fail(field, "must be a finite number.")

    def _check_positive(self, *fields: str) -> None:
        self._check_finite(*fields)
        for field in fields:
            if getattr(self, field) <= 0:
                self._fail(field, "must be > 0.")

    def _check_non_negative(self, *fields: str) -> None:
        self._check_finite(*fields)
        for field in fields:
            if getattr(self, field) < 0:
                self._fail(field, "must be >= 0 (use 0 to switch it off).")

    def _check_choice(self, field: str, choices) -> None:
        value = getattr(self, field)
        try:
            known = value in choices
        except TypeError:  # unhashable (a list or a dict from a config file)
            known = False
        if not known:
            self._fail(field, f"must be one of {sorted(choices)}.{_closest(str(value), choices)}")

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-compatible dict (nested configs become dicts with a ``type`` key)."""
        out: dict[str, Any] = {}
        if self.polymorphic:
            out["type"] = type(self).__name__
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Config) else _plain(value)
        # Fields added after runs were recorded are left out at their defaults, so that those
        # runs' configs (their resume checks, sweep point keys) read as before.
        for name, default in type(self)._OMIT_AT_DEFAULT.items():
            if out.get(name) == default:
                del out[name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build from a dict as written by :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}.")
        data = dict(data)
        type_name = data.pop("type", None)
        target = cls
        if type_name is None and cls.polymorphic and _REGISTRY.get(cls.__name__) is not cls:
            # An abstract base (DeviceConfig): which model is meant must be said.
            kinds = sorted(name for name, k in _REGISTRY.items() if issubclass(k, cls))
            raise ConfigError(f"{cls.__name__}: give a 'type' key naming the model, one of {kinds}.")
        if type_name is not None:
            if type_name not in _REGISTRY:
                raise ConfigError(
                    f"Unknown config type '{type_name}'.{_closest(type_name, _REGISTRY)} "
                    f"Known types: {sorted(_REGISTRY)}."
                )
            target = _REGISTRY[type_name]
            if not issubclass(target, cls):
                raise ConfigError(f"'{type_name}' is not a {cls.__name__}.")
        fields = {f.name: f for f in dataclasses.fields(target)}
        unknown = set(data) - set(fields)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(
                f"{target.__name__} has no field '{name}'.{_closest(name, fields)} "
                f"Valid fields: {sorted(fields)}."
            )
        hints = typing.get_type_hints(target)
        kwargs = {}
        for name, value in data.items():
            hint = hints.get(name)
            sub = _config_class(hint)
            if sub is not None and isinstance(value, dict):
                try:
                    value = sub.from_dict(value)
                except ConfigError as exc:  # say where in the outer config the bad value sits
                    raise ConfigError(f"{target.__name__}.{name}: {exc}") from None
            elif isinstance(value, list):
                item = _config_class(_tuple_item(hint))
                if item is not None:  # a tuple of configs (TrainConfig.layer_tiles): each from its dict
                    try:
                        value = [item.from_dict(v) if isinstance(v, dict) else v for v in value]
                    except ConfigError as exc:
                        raise ConfigError(f"{target.__name__}.{name}: {exc}") from None
                value = tuple(value)
            kwargs[name] = value
        return target(**kwargs)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def to_yaml(self, path: str | Path | None = None) -> str:
        import yaml  # local import keeps `import insitu` light

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_file(cls, path: str | Path) -> "Config":
        """Read a config from a ``.json``, ``.yaml`` or ``.yml`` file (suffix in any case).

        Syntax errors, unsafe YAML tags (``!!python/...``: only plain data is read, nothing is
        constructed) and unknown suffixes are :class:`ConfigError` naming the file.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".yaml", ".yml"):
            raise ConfigError(f"{path}: unknown config file type '{path.suffix}'; name it .yaml, .yml or .json.")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc}).") from None
        if suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{path} is not valid JSON: {exc}.") from None
        else:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path} is not valid YAML (or uses a tag such as !!python/..., which is never read): {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "Config":
        """A validated copy with some fields changed (like :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Config):
        return value.to_dict()
    return value


def _tuple_item(hint: Any) -> Any:
    """The item type of a ``tuple[X, ...]`` hint (also inside ``| None``), else ``None``."""
    for candidate in typing.get_args(hint) or (hint,):
        if typing.get_origin(candidate) is tuple:
            args = typing.get_args(candidate)
            return args[0] if args else None
    return None


def _config_class(hint: Any) -> type[Config] | None:
    """The Config subclass named by a type hint (``DeviceConfig`` or ``DeviceConfig | None``)."""
    candidates = typing.get_args(hint) or (hint,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, Config):
            return candidate
    return None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build any registered config from a dict carrying its ``type``."""
    return Config.from_dict(data)
