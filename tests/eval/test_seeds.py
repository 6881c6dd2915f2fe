"""Mean +- std over seeds, and the separation rule the study's table marks."""

import math

import pytest

from moon_swift.eval.seeds import separated, spread, summarize


def test_spread_is_the_sample_std_and_one_seed_has_none():
    values = spread([0.1, 0.2, 0.3])
    assert values.mean == pytest.approx(0.2) and values.std == pytest.approx(0.1)
    assert values.cell() == "0.200±0.100"
    one = spread([0.5])
    assert math.isnan(one.std) and one.cell() == "0.500"


def test_a_difference_is_separated_only_past_twice_the_pooled_std():
    moon = spread([0.50, 0.52, 0.54])  # std 0.02
    assert separated(moon, spread([0.40, 0.42, 0.44]))  # 0.10 > 2 x 0.02
    assert not separated(moon, spread([0.47, 0.49, 0.51]))  # 0.03 < 0.04
    assert not separated(spread([0.5]), spread([0.1]))  # one seed: no spread to compare with


def test_summarize_keeps_the_metrics_every_seed_reported():
    summary = summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert list(summary) == ["a"] and summary["a"].values == (1.0, 3.0)
