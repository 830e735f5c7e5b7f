"""AnalogSGD keeps what torch wraps around every optimizer's step (hooks, the profiler's label
while a profiler records, LR schedulers) without paying the label at every step."""

from __future__ import annotations

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from insitu import AnalogLinear, AnalogSGD


def _model_and_optimizer(lr=0.1):
    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    return model, AnalogSGD(model.parameters(), lr=lr)


def test_step_runs_the_global_and_own_hooks_in_torchs_order_and_a_pre_hook_may_replace_the_arguments():
    model, optimizer = _model_and_optimizer()
    calls = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
        register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post")),
        optimizer.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
        optimizer.register_step_post_hook(lambda o, a, k: calls.append("post")),
    ]
    try:
        model(torch.rand(1, 4)).sum().backward()
        optimizer.step()
        assert calls == ["global pre", "pre", "post", "global post"]
        assert model[0].tile.counters.rank1_updates == 1
        # A pre-hook's (args, kwargs) replace the step's: here a closure, whose loss step() returns.
        handles.append(optimizer.register_step_pre_hook(lambda o, a, k: ((), {"closure": lambda: torch.tensor(7.0)})))
        assert float(optimizer.step()) == 7.0
    finally:
        for handle in handles:
            handle.remove()


def test_a_profiler_sees_the_step_under_torchs_label_and_schedulers_still_step_the_rate():
    model, optimizer = _model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with torch.profiler.profile() as profiler:
        model(torch.rand(1, 4)).sum().backward()
        optimizer.step()
    assert any(event.key == "Optimizer.step#AnalogSGD.step" for event in profiler.key_averages())
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_zero_grad_clears_or_zeroes_the_digital_gradients():
    model, optimizer = _model_and_optimizer()
    digital = model[1].weight
    model(torch.rand(1, 4)).sum().backward()
    assert digital.grad is not None
    optimizer.zero_grad()
    assert digital.grad is None
    model(torch.rand(1, 4)).sum().backward()
    optimizer.zero_grad(set_to_none=False)
    assert digital.grad is not None and not digital.grad.any()
    assert model[0].tile.weight.grad is None  # analog weights never get one


def test_a_subclass_that_overrides_step_runs_the_hooks_once():
    class Clipped(AnalogSGD):
        def step(self, closure=None):
            return super().step(closure)

    model = torch.nn.Sequential(AnalogLinear(4, 3, seed=0), torch.nn.Linear(3, 2))
    optimizer = Clipped(model.parameters(), lr=0.1)
    calls = []
    optimizer.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    optimizer.register_step_post_hook(lambda o, a, k: calls.append("post"))
    model(torch.rand(1, 4)).sum().backward()
    optimizer.step()
    assert calls == ["pre", "post"]
    assert model[0].tile.counters.rank1_updates == 1
