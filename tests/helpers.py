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
    import itertools

    from banditloop.pipeline.log_sort import SortedLog
    from banditloop.pipeline.replay import ReplayOptions, replay_log

    real_iter = SortedLog.__iter__
    monkeypatch.setattr(SortedLog, "__iter__", lambda self: itertools.islice(real_iter(self), cut))
    replay_log(path, config, model, store, ReplayOptions(quiet=True))
    monkeypatch.setattr(SortedLog, "__iter__", real_iter)
    return replay_log(path, config, model, store, ReplayOptions(quiet=True, resume=True))
