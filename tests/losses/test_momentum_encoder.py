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
