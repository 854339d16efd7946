"""Small helpers shared by tests (imported as ``tests.helpers``)."""

from __future__ import annotations

import numpy as np

from banditloop.operators.base import LearnerState


def assert_states_equal(a: LearnerState, b: LearnerState, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    """Equal learner states, arms matched by id (the row order depends on first sight)."""
    assert a.kind == b.kind
    assert sorted(a.arms) == sorted(b.arms)
    order = [b.arms.index(arm) for arm in a.arms]
    assert set(a.arrays) == set(b.arrays)
    for name, arr in a.arrays.items():
        other = b.arrays[name]
        if arr.ndim and arr.shape[0] == len(a.arms) and other.shape[0] == len(b.arms):
            other = other[order]
        np.testing.assert_allclose(arr, other, rtol=rtol, atol=atol, err_msg=name)
    assert a.counters == b.counters


def replay_interrupted(path, config, model, store, cut, monkeypatch):
    """Replay the first ``cut`` events of the log (as if the run had stopped there), then resume
    with the whole log; returns the resumed run's summary."""
    import banditloop.pipeline.replay as replay_module
    from banditloop.pipeline.replay import ReplayOptions, replay_log

    real_load = replay_module.load_log

    def truncated(*args, **kwargs):
        loaded = real_load(*args, **kwargs)
        loaded.events = loaded.events[:cut]
        return loaded

    monkeypatch.setattr(replay_module, "load_log", truncated)
    replay_log(path, config, model, store, ReplayOptions(quiet=True))
    monkeypatch.setattr(replay_module, "load_log", real_load)
    return replay_log(path, config, model, store, ReplayOptions(quiet=True, resume=True))
