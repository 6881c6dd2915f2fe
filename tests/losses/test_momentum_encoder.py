"""The momentum encoder: the moving average, the swap for the key forward, what is averaged, saving."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from moon_swift.core.errors import MoonInputError
from moon_swift.losses.momentum_encoder import MomentumEncoder, trained_identity


def model(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def test_the_average_moves_by_one_minus_momentum_after_each_step():
    net = model()
    encoder = MomentumEncoder(net, momentum=0.9)
    start = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    encoder.update()
    for average, old in zip(encoder.averages, start, strict=True):
        torch.testing.assert_close(average, old + 0.1)  # 0.9 * old + 0.1 * (old + 1)
    assert encoder.updates == 1


def test_the_key_forward_uses_the_average_and_the_live_weights_come_back():
    net = model()
    frozen_copy = copy.deepcopy(net)  # the weights the average holds (updated never)
    encoder = MomentumEncoder(net, momentum=0.99)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(-1.5)  # the live model moves away
    live = copy.deepcopy(net.state_dict())
    x = torch.randn(5, 4)
    with encoder.swapped_in():
        keys = net(x)
        assert not keys.requires_grad
    torch.testing.assert_close(keys, frozen_copy(x).detach())
    for name, value in net.state_dict().items():
        assert torch.equal(value, live[name])
    with pytest.raises(RuntimeError, match="inside"), encoder.swapped_in():
        raise RuntimeError("inside")
    for name, value in net.state_dict().items():
        assert torch.equal(value, live[name])  # restored after an error too


class Gathered(nn.Linear):
    """A ZeRO-3-like layer: its weight's values live in ``ds_tensor`` (the partition); a forward uses the gathered
    copy in ``weight.data``, rebuilt from the partition only when it was released (as DeepSpeed keeps small
    parameters gathered between steps)."""

    def __init__(self):
        super().__init__(4, 3, bias=False)
        self.weight.ds_tensor = self.weight.data.clone()
        self.gathered = True

    def release(self):
        self.gathered = False

    def forward(self, x):
        if not self.gathered:
            self.weight.data = self.weight.ds_tensor.clone()
            self.gathered = True
        return super().forward(x)


def test_under_zero3_the_key_forward_gathers_the_averages_and_the_next_forward_the_live_values():
    layer = Gathered()
    averaged = layer.weight.ds_tensor.clone()
    encoder = MomentumEncoder(layer, momentum=0.9)
    layer.weight.ds_tensor.mul_(-2.0)  # the optimizer step updates the partition ...
    live = layer.weight.ds_tensor.clone()
    layer.weight.data = live.clone()  # ... and ZeRO-3 gathers its persistent parameters again after the step
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="release"), encoder.swapped_in():
        pass
    with encoder.swapped_in(release=layer.release):
        torch.testing.assert_close(layer(x), x @ averaged.T)  # not the gathered live copy
    torch.testing.assert_close(layer.weight.ds_tensor, live)
    torch.testing.assert_close(layer(x), x @ live.T)  # not the averages left gathered


def test_only_trained_parameters_are_averaged_as_under_lora():
    net = model()
    net[0].weight.requires_grad_(False)  # a frozen base weight: shared, never averaged
    encoder = MomentumEncoder(net, momentum=0.5)
    assert encoder.names == ["0.bias", "2.weight", "2.bias"]
    assert encoder.numel() == 8 + 24 + 3


def test_an_average_of_another_model_is_refused_and_its_own_restored():
    net = model()
    encoder = MomentumEncoder(net, momentum=0.9)
    encoder.update()
    state = encoder.state_dict()
    again = MomentumEncoder(model(seed=1), momentum=0.9)
    again.load_state_dict(state)
    for a, b in zip(again.averages, encoder.averages, strict=True):
        assert torch.equal(a, b)
    assert again.updates == 1

    other = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))
    with pytest.raises(MoonInputError, match="averages other parameters"):
        MomentumEncoder(other, momentum=0.9).load_state_dict(state, source="ckpt/moon_infonce_momentum_rank0.pt")
    assert trained_identity(net) == trained_identity(model(seed=1)) != trained_identity(other)


def test_momentum_must_be_below_one():
    with pytest.raises(MoonInputError):
        MomentumEncoder(model(), momentum=1.0)
