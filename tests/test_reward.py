import pytest

from banditloop.core.reward import RewardSpec


def test_click_reward():
    spec = RewardSpec("click")
    assert spec.value(False, 0, 0.0) == 0.0
    assert spec.value(True, 2, 30.0) == 1.0
    assert spec.binary


def test_conversion_reward_counts_once():
    spec = RewardSpec("conversion")
    assert spec.value(True, 0, 0.0) == 0.0
    assert spec.value(True, 1, 5.0) == 1.0
    assert spec.value(True, 3, 15.0) == 1.0


def test_click_plus_value_and_increments():
    spec = RewardSpec("click+value", weight=0.1)
    assert not spec.binary
    before = spec.value(True, 0, 0.0)
    after = spec.value(True, 1, 20.0)
    assert before == 1.0
    assert after - before == pytest.approx(2.0)


def test_invalid_spec():
    with pytest.raises(ValueError):
        RewardSpec("revenue")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RewardSpec("click+value", weight=-1.0)
    assert RewardSpec.from_dict(RewardSpec("conversion").to_dict()) == RewardSpec("conversion")
