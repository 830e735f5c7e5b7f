"""Misuse that used to fail silently or with an unclear error (issue 19)."""

from __future__ import annotations

import pytest
import torch

from insitu import AnalogLinear, AnalogSGD
from insitu.optim import ForeignOptimizerError


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.1), lambda p: torch.optim.Adam(p)], ids=["SGD", "Adam"])
def test_a_torch_optimizer_refuses_analog_weights_at_its_first_step(make):
    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    optimizer = make(model.parameters())
    before = model[0].tile.get_weights()
    model(torch.rand(2, 4)).sum().backward()
    with pytest.raises(ForeignOptimizerError, match="AnalogSGD"):
        optimizer.step()
    assert torch.equal(model[0].tile.get_weights(), before)


def test_a_torch_optimizer_of_the_digital_parameters_only_works():
    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    digital = [p for p in model.parameters() if not hasattr(p, "_insitu_tile")]
    optimizer = torch.optim.SGD(digital, lr=0.1)
    before = model[1].weight.detach().clone()
    model(torch.rand(2, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(model[1].weight, before)


def test_analog_sgd_still_accumulates_several_backward_passes():
    layer = AnalogLinear(4, 3, seed=0)
    optimizer = AnalogSGD(layer.parameters(), lr=0.1)
    for _ in range(3):
        layer(torch.rand(1, 4)).sum().backward()
    assert len(layer.tile._pending) == 3
    optimizer.step()
    assert layer.tile.counters.rank1_updates == 3


def test_a_refused_load_state_dict_leaves_the_layer_unchanged():
    from insitu.config import ConfigError
    from insitu.devices import ConstantStepDevice
    from insitu.tile import TileConfig

    source = AnalogLinear(4, 3, seed=1, config=TileConfig(device=ConstantStepDevice(dw_min=0.002)))
    target = AnalogLinear(4, 3, seed=2)
    before = {k: v.clone() for k, v in target.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ConfigError, match="different config"):
        target.load_state_dict(source.state_dict())
    after = target.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # before the fix: weight and device_params overwritten
