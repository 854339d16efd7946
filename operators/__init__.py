"""Incremental learners (one per module), all behind :class:`banditloop.operators.base.Learner`."""
