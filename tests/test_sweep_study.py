"""Study files: axis values (lists, linear and log ranges, zips), expansion, dotted paths, errors."""

from __future__ import annotations

import pytest

from insitu.config import ConfigError
from insitu.presets import get_preset
from insitu.sweep import AxisConfig, StudyConfig

BASE = {"preset": "gokmen-vlasov-2016", "dataset": "digits", "hidden": [8], "epochs": 1, "subset": 100, "lr_milestones": []}


def study(axes, **changes):
    return StudyConfig.from_dict({"name": "t", "base": BASE, "axes": axes, **changes})


def test_axis_values_from_lists_ranges_and_zips():
    assert AxisConfig(field="lr", values=(0.1, 0.2)).points() == [(0.1,), (0.2,)]
    assert AxisConfig(field="lr", start=0.0, stop=1.0, num=5).points() == [(0.0,), (0.25,), (0.5,), (0.75,), (1.0,)]
    log = [v for (v,) in AxisConfig(field="lr", start=1e-4, stop=1e-2, num=5, scale="log").points()]
    assert log[0] == 1e-4 and log[2] == 1e-3 and log[4] == 1e-2  # the decades are hit exactly
    assert log[1] == pytest.approx(10**-3.5)
    # A zip sets several fields together: per-field ranges, or one value given to all fields.
    bounds = AxisConfig(field=("tile.device.w_max", "tile.device.w_min"), start=(0.2, -0.2), stop=(1.0, -1.0), num=3)
    assert bounds.points() == [(0.2, -0.2), (0.6, -0.6), (1.0, -1.0)]
    noise = AxisConfig(field=["tile.forward.out_noise", "tile.backward.out_noise"], values=[0.0, 0.1])
    assert noise.points() == [(0.0, 0.0), (0.1, 0.1)]
    # Hand-written YAML reads 1e-4 as a string; the axis takes it as the number it looks like.
    assert AxisConfig.from_dict({"field": "lr", "start": "1e-4", "stop": "1e-2", "num": 3, "scale": "log"}).points()[1] == (1e-3,)
    assert AxisConfig.from_dict({"field": "update_mode", "values": ["summed", "sequential"]}).points()[0] == ("summed",)


def test_one_at_a_time_varies_each_axis_around_the_baseline_and_merges_duplicates():
    s = study(
        [
            {"field": "tile.device.dw_min", "values": [0.001, 0.002, 0.004]},  # 0.001 is the preset's value
            {"field": ["tile.device.w_max", "tile.device.w_min"], "label": "bound", "values": [[0.3, -0.3], [1.0, -1.0]]},
        ],
        seeds=[0, 1],
    )
    points = s.points()
    # baseline + 2 new dw_min values + 2 bounds, each with two seeds
    assert len(points) == 5 * 2
    assert len({p.key for p in points}) == len(points)
    baseline = [p for p in points if p.axes == ("tile.device.dw_min", "bound")]
    assert len(baseline) == 2 and {p.seed for p in baseline} == {0, 1}
    assert baseline[0].coords == {"tile.device.dw_min": 0.001, "bound": 0.6}
    # The base has tile=None: every point carries the preset's tile with the swept field changed.
    preset = get_preset("gokmen-vlasov-2016")
    assert baseline[0].config.tile == preset
    bound = next(p for p in points if p.coords["bound"] == 1.0)
    assert (bound.config.tile.device.w_max, bound.config.tile.device.w_min) == (1.0, -1.0)
    assert bound.config.tile.device.dw_min == preset.device.dw_min and bound.axes == ("bound",)
    assert {p.config.seed for p in points} == {0, 1}


def test_grid_is_the_full_product_and_training_fields_keep_the_preset():
    s = study([{"field": "lr", "values": [0.01, 0.1]}, {"field": "batch_size", "values": [1, 2, 4]}], mode="grid")
    points = s.points()
    assert len(points) == 6
    assert {(p.config.lr, p.config.batch_size) for p in points} == {(a, b) for a in (0.01, 0.1) for b in (1, 2, 4)}
    assert all(p.config.tile is None for p in points)  # no tile field swept: the preset stays a name


def test_unknown_dotted_paths_suggest_the_closest_field():
    with pytest.raises(ConfigError, match=r"Did you mean 'tile.device.dw_min'"):
        study([{"field": "tile.device.dw_mn", "values": [0.001]}])
    with pytest.raises(ConfigError, match=r"Did you mean 'tile.device'"):
        study([{"field": "tile.devise.dw_min", "values": [0.001]}])
    with pytest.raises(ConfigError, match=r"Did you mean 'lr'.*Valid there: .*batch_size"):
        study([{"field": "lrr", "values": [0.1]}])
    with pytest.raises(ConfigError, match="is a value"):
        study([{"field": "lr.value", "values": [0.1]}])


@pytest.mark.parametrize(
    "axis, message",
    [
        ({"field": "lr", "start": 0.1, "stop": 1.0, "num": 0}, "range with no points"),
        ({"field": "lr", "values": []}, "is empty"),
        ({"field": "lr", "start": -0.1, "stop": 1.0, "num": 3, "scale": "log"}, "same sign"),
        ({"field": "lr", "values": [0.1], "start": 0.1, "stop": 1.0, "num": 2}, "not both"),
        ({"field": "lr"}, "is missing"),
        ({"field": "lr", "start": 0.1, "num": 3}, "'stop'"),
        ({"field": "lr", "values": [0.1], "scale": "cubic"}, "must be one of"),
        ({"field": ["tile.device.w_max", "tile.device.w_min"], "values": [[0.3, -0.3, 1.0]]}, "must have 2 values"),
    ],
)
def test_bad_axes_are_clear_errors(axis, message):
    with pytest.raises(ConfigError, match=message):
        study([axis])


def test_a_point_that_is_not_a_valid_config_is_named():
    with pytest.raises(ConfigError, match=r"tile.device.dw_min=0.9.*smaller than the weight range"):
        study([{"field": "tile.device.dw_min", "values": [0.001, 0.9]}])
    with pytest.raises(ConfigError, match="list the repeats under 'seeds'"):
        study([{"field": "seed", "values": [1, 2]}])
    with pytest.raises(ConfigError, match="swept by two axes"):
        study([{"field": "lr", "values": [0.1]}, {"field": "lr", "label": "again", "values": [0.2]}])
    with pytest.raises(ConfigError, match="axes.*is empty"):
        study([])


def test_study_round_trips_through_yaml(tmp_path):
    s = study(
        [{"field": "tile.device.dw_min", "start": 1e-4, "stop": 1e-2, "num": 3, "scale": "log"},
         {"field": ["tile.forward.out_noise", "tile.backward.out_noise"], "label": "noise", "values": [0.0, 0.1]}],
        seeds=[3, 4],
    )
    s.to_yaml(tmp_path / "study.yaml")
    again = StudyConfig.from_file(tmp_path / "study.yaml")
    assert again.to_dict() == s.to_dict()
    assert [p.key for p in again.points()] == [p.key for p in s.points()]


def test_point_keys_follow_the_base_the_swept_values_and_the_seed():
    axes = [{"field": "tile.device.dw_min", "values": [0.001, 0.002]}]
    keys = {p.key for p in study(axes).points()}
    # More seeds or more values add points and keep the existing ones (what --extend relies on).
    assert keys < {p.key for p in study(axes, seeds=[0, 1]).points()}
    assert keys < {p.key for p in study([{"field": "tile.device.dw_min", "values": [0.001, 0.002, 0.003]}]).points()}
    # Another base config is another set of points.
    longer = StudyConfig.from_dict({"name": "t", "base": {**BASE, "epochs": 2}, "axes": axes})
    assert keys.isdisjoint({p.key for p in longer.points()})
