"""Study files: a base training config, the swept axes, the seeds, and their expansion into points.

A study answers "what must the device do?" the way Gokmen & Vlasov (2016) derive every spec of
their Table 1: train the same network many times, changing one device or circuit parameter at a
time around the baseline (``mode: one-at-a-time``), or over a full grid of several parameters
(``mode: grid``), each point repeated over several seeds.

An axis names one config field by dotted path (``lr``, ``tile.device.dw_min``,
``tile.forward.out_noise``) or several fields changed together (a *zip*, e.g. both weight bounds
``[tile.device.w_max, tile.device.w_min]``), and its values as a list, a linear range or a log
range. Example (YAML)::

    name: dw-min
    base: {preset: gokmen-vlasov-2016, dataset: mnist, subset: 5000, epochs: 2}
    seeds: [0, 1]
    axes:
      - field: tile.device.dw_min
        start: 1.0e-4
        stop: 1.0e-2
        num: 5
        scale: log
      - field: [tile.device.w_max, tile.device.w_min]
        label: weight bound
        values: [[0.2, -0.2], [0.6, -0.6], [1.0, -1.0]]

Every point is a complete :class:`~insitu.training.TrainConfig`. Tile fields are set on the
base's ``tile``, or, when the base has ``tile: null``, on a copy of its preset's tile config
(:func:`insitu.presets.get_preset`), which then becomes the point's ``tile``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from typing import Any

from ..config import Config, ConfigError, _closest, register_config
from ..training import TrainConfig

__all__ = ["AxisConfig", "StudyConfig", "StudyPoint", "MODES", "SCALES"]

MODES = ("one-at-a-time", "grid")
SCALES = ("linear", "log")

# YAML 1.1 (PyYAML) reads "1e-4" (no dot) as a string; study files are written by hand, so such
# strings are taken as the numbers they look like.
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _as_number(value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if re.fullmatch(r"[+-]?\d+", value.strip()) else number
    return value


def _plain_value(value: Any) -> Any:
    """JSON-compatible copy of an axis value (tuples become lists, numeric strings numbers)."""
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    return _as_number(value)


@register_config
@dataclasses.dataclass
class AxisConfig(Config):
    """One swept parameter (or several zipped together).

    Attributes:
        field: a dotted config path (``"tile.device.dw_min"``), or a list of paths that take
            their values together (a zip: point ``k`` sets every field to its ``k``-th value).
        values: explicit values, one per point. For a zip, each value is either a list with one
            entry per field, or a single value given to all fields.
        start, stop, num, scale: a range instead of ``values``: ``num`` points from ``start`` to
            ``stop`` inclusive, evenly spaced (``linear``) or geometrically (``log``; ``start``
            and ``stop`` of the same sign, not 0). For a zip, ``start`` and ``stop`` may be lists
            with one entry per field.
        label: name of the axis in the store, the plots and the report (default: the first
            field's path).
    """

    field: str | tuple[str, ...] = ""
    values: tuple | None = None
    start: float | tuple[float, ...] | None = None
    stop: float | tuple[float, ...] | None = None
    num: int | None = None
    scale: str = "linear"
    label: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.field, list):
            self.field = tuple(self.field)
        if self.values is not None:
            self.values = tuple(_plain_value(v) if isinstance(v, (list, tuple)) else _as_number(v) for v in self.values)
        for name in ("start", "stop"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                setattr(self, name, tuple(_as_number(v) for v in value))
            else:
                setattr(self, name, _as_number(value))
        self.num = _as_number(self.num)
        super().__post_init__()

    @property
    def fields(self) -> tuple[str, ...]:
        """The dotted paths this axis sets (one, or several for a zip)."""
        return self.field if isinstance(self.field, tuple) else (self.field,)

    @property
    def name(self) -> str:
        return self.label if self.label else self.fields[0]

    def validate(self) -> None:
        fields = self.fields
        if not fields or any(not isinstance(f, str) or not f.strip() for f in fields):
            self._fail("field", "must be a dotted config path such as 'tile.device.dw_min' (or a list of them to zip).")
        if len(set(fields)) != len(fields):
            self._fail("field", "names the same path twice.")
        is_range = any(v is not None for v in (self.start, self.stop, self.num))
        if self.values is not None and is_range:
            self._fail("values", "give either 'values' or a range ('start', 'stop', 'num'), not both.")
        if self.values is None and not is_range:
            self._fail("values", "is missing: give 'values: [...]' or a range 'start', 'stop', 'num' (and 'scale: log').")
        self._check_choice("scale", SCALES)
        if self.values is not None:
            if len(self.values) == 0:
                self._fail("values", "is empty: an axis needs at least one value.")
            if len(fields) > 1:
                for value in self.values:
                    if isinstance(value, (list, tuple)) and len(value) != len(fields):
                        self._fail("values", f"each entry of a zip over {len(fields)} fields must have {len(fields)} values, got {list(value)}.")
            return
        for name in ("start", "stop", "num"):
            if getattr(self, name) is None:
                self._fail(name, "is missing: a range needs 'start', 'stop' and 'num'.")
        if isinstance(self.num, bool) or not isinstance(self.num, int) or self.num < 1:
            self._fail("num", "must be an integer >= 1: the number of points of the range (a range with no points sweeps nothing).")
        for name in ("start", "stop"):
            value = getattr(self, name)
            items = value if isinstance(value, tuple) else (value,)
            if isinstance(value, tuple) and len(value) != len(fields):
                self._fail(name, f"must have one entry per zipped field ({len(fields)}), or be a single number.")
            for item in items:
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                    self._fail(name, "must be a finite number (write 1.0e-4 or 0.0001 in YAML).")
        if self.scale == "log":
            for a, b in zip(self._per_field(self.start), self._per_field(self.stop)):
                if a == 0 or b == 0 or (a > 0) != (b > 0):
                    self._fail("start", f"a log range needs start and stop of the same sign and not 0, got {a} and {b}; use scale: linear.")

    def _per_field(self, value) -> tuple:
        return value if isinstance(value, tuple) else (value,) * len(self.fields)

    def points(self) -> list[tuple]:
        """The axis values, one tuple per point with one entry per field."""
        n = len(self.fields)
        if self.values is not None:
            return [tuple(v) if isinstance(v, (list, tuple)) and n > 1 else (v,) * n for v in self.values]
        starts, stops = self._per_field(self.start), self._per_field(self.stop)
        columns = [_spaced(a, b, self.num, self.scale) for a, b in zip(starts, stops)]
        return list(zip(*columns))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        return {k: v for k, v in out.items() if v is not None and not (k == "scale" and v == "linear" and self.values is not None)}


def _spaced(start: float, stop: float, num: int, scale: str) -> list[float]:
    """``num`` values from ``start`` to ``stop`` inclusive; rounded to 12 significant digits so
    that a range hits the baseline value exactly (1e-3 is a point of 1e-4..1e-2 in 5 steps)."""
    if num == 1:
        return [float(start)]
    if scale == "log":
        ratio = stop / start
        raw = [start * ratio ** (k / (num - 1)) for k in range(num)]
    else:
        raw = [start + (stop - start) * k / (num - 1) for k in range(num)]
    return [float(f"{v:.12g}") for v in raw]


@dataclasses.dataclass
class StudyPoint:
    """One training run of a study.

    Attributes:
        key: the point's identity in the store: a hash of the study's base config, the swept
            field values and the seed. It does not hash the expanded config, so a later insitu
            that adds a config field with a default does not turn finished points into new ones.
            Two assignments that expand to the same config are one point (the first one's key).
        config: the complete :class:`TrainConfig` of this run (seed included).
        coords: ``{axis name: value}`` for every axis of the study (the first field's value for a
            zip); in a one-at-a-time study the axes not varied sit at the baseline value.
        axes: the axes whose plot this point belongs to (in a one-at-a-time study, the varied
            axis; the baseline point belongs to every axis).
        seed: the repeat.
    """

    key: str
    config: TrainConfig
    coords: dict[str, Any]
    axes: tuple[str, ...]
    seed: int


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@register_config
@dataclasses.dataclass
class StudyConfig(Config):
    """A sweep: what to train, what to vary, how often to repeat.

    Attributes:
        name: name of the study (figure titles, default output folder ``sweeps/<name>``).
        base: the training run all points start from (preset, model, dataset, epochs, ...).
        axes: the swept parameters.
        mode: ``one-at-a-time`` (each axis varied alone, the others at the baseline, plus the
            baseline itself; what the papers do) or ``grid`` (every combination).
        seeds: repeats: every point is trained once per seed (``base.seed`` is replaced).
        include_baseline: in a one-at-a-time study, also run the unmodified base config.
    """

    name: str = "study"
    base: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    axes: tuple[AxisConfig, ...] = ()
    mode: str = "one-at-a-time"
    seeds: tuple[int, ...] = (0,)
    include_baseline: bool = True

    def __post_init__(self) -> None:
        # Config.from_dict builds nested configs only for single fields; the axes are a list.
        self.axes = tuple(AxisConfig.from_dict(a) if isinstance(a, dict) else a for a in (self.axes or ()))
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            self.seeds = (self.seeds,)
        self.seeds = tuple(self.seeds) if isinstance(self.seeds, (list, tuple)) else self.seeds
        super().__post_init__()

    def validate(self) -> None:
        # "." and ".." would put the default output folder sweeps/<name> outside sweeps/.
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", self.name or "") or set(self.name) == {"."}:
            self._fail("name", "must be a non-empty name of letters, digits, '.', '_' or '-', not only dots (it names files).")
        if not isinstance(self.base, TrainConfig):
            self._fail("base", "must be a TrainConfig (a mapping of `insitu train` options).")
        self._check_choice("mode", MODES)
        if not self.axes:
            self._fail("axes", "is empty: give at least one swept parameter, e.g. {field: tile.device.dw_min, values: [0.001, 0.01]}.")
        for axis in self.axes:
            if not isinstance(axis, AxisConfig):
                self._fail("axes", f"entries must be axis mappings, got {type(axis).__name__}.")
        names = [axis.name for axis in self.axes]
        if len(set(names)) != len(names):
            self._fail("axes", f"two axes have the same name {sorted(n for n in names if names.count(n) > 1)[0]!r}; give one a 'label'.")
        fields = [f for axis in self.axes for f in axis.fields]
        if len(set(fields)) != len(fields):
            self._fail("axes", f"the field {sorted(f for f in fields if fields.count(f) > 1)[0]!r} is swept by two axes.")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            self._fail("seeds", "must be one or more non-negative integers, e.g. [0, 1, 2].")
        if len(set(self.seeds)) != len(self.seeds):
            self._fail("seeds", "lists a seed twice.")
        if "seed" in fields:
            self._fail("axes", "must not sweep 'seed': list the repeats under 'seeds'.")
        # Fields left out of the dict at their defaults (TrainConfig._TASK_FIELDS: task, cell, ...)
        # may be swept too.
        base = {**type(self.base)._TASK_FIELDS, **self._base_dict()}
        for axis in self.axes:
            for path in axis.fields:
                _check_path(base, path)
        self.points()  # every point must be a valid TrainConfig; errors name the point

    # -- expansion ------------------------------------------------------------------------------
    def _touches_tile(self) -> bool:
        return any(f.startswith("tile.") for axis in self.axes for f in axis.fields)

    def _base_dict(self) -> dict:
        """The base config as a dict, with the preset's tile materialised when tile fields are swept."""
        from ..presets import get_preset

        data = self.base.to_dict()
        if self._touches_tile() and data["tile"] is None:
            data["tile"] = get_preset(self.base.preset).to_dict()
        return data

    def baseline_coords(self) -> dict[str, Any]:
        """``{axis name: value of its first field in the base config}``."""
        base = {**type(self.base)._TASK_FIELDS, **self._base_dict()}
        return {axis.name: _get_path(base, axis.fields[0]) for axis in self.axes}

    def points(self) -> list[StudyPoint]:
        """All points of the study, seeds innermost, in a fixed order; duplicates merged."""
        baseline = self.baseline_coords()
        combos: list[tuple[dict[str, tuple], tuple[str, ...]]] = []  # (axis -> field values, member axes)
        if self.mode == "grid":
            grids = [axis.points() for axis in self.axes]
            for values in itertools.product(*grids):
                combos.append(({axis.name: v for axis, v in zip(self.axes, values)}, tuple(a.name for a in self.axes)))
        else:
            if self.include_baseline:
                combos.append(({}, tuple(a.name for a in self.axes)))
            for axis in self.axes:
                for value in axis.points():
                    combos.append(({axis.name: value}, (axis.name,)))
        base = self.base.to_dict()
        by_config: dict[str, StudyPoint] = {}
        for assignment, members in combos:
            for seed in self.seeds:
                config = self._point_config(assignment, seed)
                same_config = _hash(config.to_dict())
                if same_config in by_config:
                    point = by_config[same_config]
                    point.axes = tuple(dict.fromkeys(point.axes + members))
                    continue
                fields = {path: value for axis in self.axes if axis.name in assignment for path, value in zip(axis.fields, assignment[axis.name])}
                key = _hash({"base": base, "fields": fields, "seed": seed})
                coords = dict(baseline)
                coords.update({name: values[0] for name, values in assignment.items()})
                by_config[same_config] = StudyPoint(key, config, coords, members, seed)
        return list(by_config.values())

    def _point_config(self, assignment: dict[str, tuple], seed: int) -> TrainConfig:
        data = self._base_dict()
        data["seed"] = seed
        changes = []
        for axis in self.axes:
            if axis.name in assignment:
                for path, value in zip(axis.fields, assignment[axis.name]):
                    _set_path(data, path, value)
                    changes.append(f"{path}={value!r}")
        try:
            return TrainConfig.from_dict(data)
        except (ConfigError, TypeError) as exc:
            where = ", ".join(changes) or "the base config"
            raise ConfigError(f"Study '{self.name}': the point with {where} (seed {seed}) is not a valid config: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["axes"] = [axis.to_dict() for axis in self.axes]
        return out

    def axis(self, name: str) -> AxisConfig:
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise KeyError(name)


def _check_path(data: dict, path: str) -> None:
    """Raise a ConfigError unless ``path`` names a field of the nested config dict ``data``."""
    node: Any = data
    walked = []
    for part in path.split("."):
        if isinstance(node, dict) and part in node and part != "type":
            node = node[part]
            walked.append(part)
            continue
        where = ".".join(walked)
        if node is None and walked:
            raise ConfigError(f"Cannot sweep '{path}': '{where}' is None in the base config; set it there first.")
        if not isinstance(node, dict):
            raise ConfigError(f"Cannot sweep '{path}': '{where}' is a value ({node!r}), not a config with fields.")
        candidates = [k for k in node if k != "type"]
        full = [f"{where}.{k}" if where else k for k in candidates]
        hint = _closest(f"{where}.{part}" if where else part, full)
        raise ConfigError(
            f"Unknown config field '{path}': '{part}' is not a field of {('`' + where + '`') if where else 'the training config'}.{hint} "
            f"Valid there: {', '.join(sorted(full))}."
        )


def _get_path(data: dict, path: str) -> Any:
    node = data
    for part in path.split("."):
        node = node[part]
    return node


def _set_path(data: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = list(value) if isinstance(value, tuple) else value
