"""One model shard learning from events: the join, the learner, and its checkpoints.

Replay, simulation and live consumption all drive a :class:`LearningRun`; they differ only in
where events come from and what "position" means (a line count, Kafka offsets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from banditloop.core.events import Event
from banditloop.operators.base import Learner
from banditloop.operators.registry import learner_from_state
from banditloop.pipeline import join_state
from banditloop.pipeline.click_labels import ClickLabelJoin
from banditloop.pipeline.dead_letters import DeadLetterSink
from banditloop.pipeline.event_time import EventTimeSink, uses_event_times
from banditloop.pipeline.join import EventJoin
from banditloop.pipeline.model import LearnerSink, ModelConfig, Vectorizer
from banditloop.pipeline.names import DEFAULT_SHARD, check_name

if TYPE_CHECKING:  # SQLAlchemy is imported by runs that checkpoint only (simulate --no-checkpoint does not)
    from banditloop.pipeline.checkpoints import Checkpoint, CheckpointStore


class IncompatibleCheckpoint(ValueError):
    """A stored checkpoint that does not fit the requested model configuration."""


class LearningRun:
    """One model learning from one stream of events: a learner behind an :class:`EventJoin`, with
    checkpoints of both. ``replay``, ``simulate`` and ``consume`` (one per partition) all use it, so
    they learn identically.

    >>> from banditloop.core.events import Click, Impression
    >>> run = LearningRun(ModelConfig("ts"), model="example")
    >>> run.process(Impression(event_id="e1", ts=0.0, impression_id="i1", arm="a"))
    'impression'
    >>> run.process(Click(event_id="c1", ts=5.0, impression_id="i1"))
    'click'
    >>> run.counters()["rewarded"], run.learner.arms
    (1, ['a'])
    """

    def __init__(self, config: ModelConfig, model: str, *, shard: str = DEFAULT_SHARD,
                 learner: Learner | None = None, dead_letter: DeadLetterSink | None = None) -> None:
        self.config = config
        self.model = check_name("model", model)
        self.shard = check_name("shard", shard)
        self.learner = learner if learner is not None else config.new_learner()
        self.vectorizer = Vectorizer(config)
        event_times = uses_event_times(self.learner)  # dfm, esmm: see banditloop.pipeline.event_time
        self.sink = (EventTimeSink(self.learner, self.vectorizer) if event_times
                     else LearnerSink(self.learner, self.vectorizer, config.ips_clip))
        labels = event_times and getattr(self.learner, "click_labels", False)  # esmm: see click_labels
        self.join = (ClickLabelJoin if labels else EventJoin)(
            sink=self.sink, reward=config.reward,
            config=config.join,
            clip_reward=self.learner.binary_reward and not config.reward.binary, dead_letter=dead_letter,
            dead_letter_source="join" if shard == DEFAULT_SHARD else f"join/{shard}",
            tick=self.learner.tick if event_times else None)  # type: ignore[attr-defined]
        if isinstance(self.sink, EventTimeSink):
            self.sink.join = self.join
        self.invalid = 0
        self.version: int | None = None

    # -- processing -----------------------------------------------------------------------------
    def process(self, event: Event) -> str:
        """Advance the watermark to this event's time and join it."""
        self.join.advance(event.ts)
        return self.join.process(event)

    def counters(self) -> dict[str, Any]:
        return {**self.join.counters, "invalid": self.invalid}

    # -- checkpoints ----------------------------------------------------------------------------
    def flush(self) -> None:
        """Apply the learner updates the sink has queued (``LearnerSink.batch``)."""
        self.sink.flush()

    def _full_join_state(self) -> bytes:
        """A full snapshot in parts (written part by part: never the whole state in one buffer), for a
        delta whose base is gone."""
        return join_state.export_parted(self.join)

    def snapshot(self, source: dict[str, Any]) -> Checkpoint:
        """A checkpoint whose join state is a delta on :attr:`version` when it can be (the store
        writes ``full_join_state()`` instead when that version is gone); call :meth:`saved` once
        it is durable. Queued learner updates are applied first."""
        from banditloop.pipeline.checkpoints import Checkpoint

        self.sink.flush()
        return Checkpoint(model=self.model, shard=self.shard, config=self.config.to_dict(),
                          state=self.learner.export_state(), join_state=self.join.export_checkpoint(self.version),
                          counters=self.counters(), source=source, full_join_state=self._full_join_state)

    def saved(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` (from :meth:`snapshot`, no event processed since) was written."""
        self.version = checkpoint.version
        self.join.checkpoint_saved(checkpoint.join_state)

    def checkpoint(self, store: CheckpointStore, source: dict[str, Any]) -> int:
        cp = self.snapshot(source)
        store.save(cp)
        self.saved(cp)
        return cp.version  # type: ignore[return-value]

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, *, dead_letter: DeadLetterSink | None = None,
                        expect: ModelConfig | None = None) -> LearningRun:
        """Rebuild a run (learner, join state, counters) from a stored checkpoint."""
        config = ModelConfig.from_dict(checkpoint.config)
        if expect is not None and expect.to_dict() != config.to_dict():
            raise IncompatibleCheckpoint(
                f"model {checkpoint.model!r} was checkpointed with a different configuration "
                f"(stored learner {config.learner!r}); use another --model name or the same options")
        learner = learner_from_state(checkpoint.state)
        run = cls(config, checkpoint.model, shard=checkpoint.shard, learner=learner, dead_letter=dead_letter)
        if checkpoint.join_state:
            run.join.import_state(checkpoint.join_state, getattr(checkpoint, "join_chain", ()))
        run.invalid = int(checkpoint.counters.get("invalid", 0))
        run.version = checkpoint.version
        return run
