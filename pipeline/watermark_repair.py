"""Repairing a poisoned watermark: a new checkpoint version with the event time clamped.

Before event times were checked against the clock, one event dated far in the future (a click at
``ts=1e15``) could drag a shard's watermark there; the watermark never goes back and is
checkpointed, so every later impression was dropped as late, forever. :func:`plan_repair` finds the
shards of a model whose newest event time per input (``source["max_ts"]``) or join watermark is
after a given time ``to``; :func:`apply_repair` writes, for each of them, a **new version** restored
from the newest usable one with

* every input's newest event time clamped to ``to``, and
* the join's watermark clamped to ``to - allowed_lateness`` (what a worker would derive from it),
* held feedback (clicks waiting for their impression) dated after ``to`` dropped: it is the poison
  itself (a click at ``ts=1e15`` for an unknown impression), and no longer even decodes,

keeping the learner's parameters, the counters, the offsets and the open impressions as they were.
The version records what was done in ``source["watermark_repair"]`` (when, by whom, why, and the
values before). Older versions are not touched (nothing is deleted).

Fencing: the repair claims the shards' leases (:mod:`banditloop.pipeline.leases`) before reading
them and writes fenced, like a worker. Claiming takes the shards away from any worker still holding
them: its next checkpoint is refused and it restores the repaired version. So the caller refuses
(unless forced) while a *live* worker holds a lease, see :func:`lease_is_live`.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from banditloop.core.state_codec import CorruptState
from banditloop.pipeline.checkpoint_tables import LeaseRow
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.runner import LearningRun

#: the lease owner a repair claims the shards for (``repair:<host>:<pid>``)
REPAIR_OWNER_PREFIX = "repair:"


@dataclass
class Lease:
    """Who last claimed a shard: fencing epoch, owner (``host:pid:group`` for consume), when."""

    epoch: int
    owner: str
    claimed_at: datetime


@dataclass
class ShardRepair:
    """What a repair changes in one shard (``new_version`` once written)."""

    shard: str
    version: int
    max_ts_before: dict[str, float]
    max_ts_after: dict[str, float]
    watermark_before: float | None
    watermark_after: float | None
    lease: Lease | None = None
    live: bool = False
    new_version: int | None = None
    #: held feedback dated after the repair time, dropped (counted as unmatched)
    dropped_held: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (self.max_ts_after != self.max_ts_before or self.watermark_after != self.watermark_before
                or self.dropped_held > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"shard": self.shard, "version": self.version, "new_version": self.new_version,
                "max_ts": {"before": self.max_ts_before, "after": self.max_ts_after},
                "watermark": {"before": self.watermark_before, "after": self.watermark_after},
                "lease": None if self.lease is None else {
                    "epoch": self.lease.epoch, "owner": self.lease.owner,
                    "claimed_at": self.lease.claimed_at.isoformat(timespec="seconds")},
                "held_feedback_dropped": self.dropped_held, "live_worker": self.live,
                "skipped_versions": self.skipped}


def clamp(max_ts: dict[str, float], watermark: float | None, to: float,
          allowed_lateness: float) -> tuple[dict[str, float], float | None]:
    """The newest event times and join watermark after a repair to ``to``.

    >>> clamp({"impressions": 100.0, "clicks": 1e15}, 1e15 - 60, to=200.0, allowed_lateness=60.0)
    ({'impressions': 100.0, 'clicks': 200.0}, 140.0)
    >>> clamp({"impressions": 100.0}, 40.0, to=200.0, allowed_lateness=60.0)   # nothing ahead: unchanged
    ({'impressions': 100.0}, 40.0)
    """
    after = {role: min(ts, to) for role, ts in max_ts.items()}
    if watermark is not None:
        watermark = min(watermark, to - allowed_lateness)
    return after, watermark


def lease_is_live(lease: Lease | None, newest_write: datetime | None, *, live_within: float,
                  now: datetime | None = None, host: str | None = None) -> bool:
    """Whether a worker may still be running with this lease.

    A consume worker's lease owner is ``host:pid:group``. On this host the answer is exact: is that
    process alive? For another host it cannot be known from here, so the lease counts as live while
    it was claimed, or the shard was checkpointed, less than ``live_within`` seconds ago (a running
    worker checkpoints every few seconds while it has traffic). A repair's own lease is never live.
    """
    if lease is None or lease.owner.startswith(REPAIR_OWNER_PREFIX):
        return False
    owner_host, _, rest = lease.owner.partition(":")
    pid_text = rest.partition(":")[0]
    if owner_host == (host or socket.gethostname()) and pid_text.isdigit():
        return _process_exists(int(pid_text))
    now = now or datetime.now(UTC)
    last = max([t for t in (lease.claimed_at, newest_write) if t is not None])
    return (now - _aware(last)).total_seconds() < live_within


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def shard_leases(store: CheckpointStore, model: str) -> dict[str, Lease]:
    with Session(store.engine) as session:
        rows = session.execute(select(LeaseRow.shard, LeaseRow.epoch, LeaseRow.owner, LeaseRow.claimed_at)
                               .where(LeaseRow.model == model))
        return {shard: Lease(epoch, owner, _aware(claimed)) for shard, epoch, owner, claimed in rows}


@dataclass
class _Loaded:
    run: LearningRun
    source: dict[str, Any]
    version: int
    max_ts: dict[str, float]
    watermark: float | None
    dropped: int
    skipped: list[str]


def _sanitize(join_state: bytes, to: float) -> tuple[bytes, float | None, int]:
    """The join state without held feedback dated after ``to`` (such feedback is the poison itself:
    it would be held until the watermark reached it, and an event time beyond the year 3000 no longer
    even decodes), its watermark as stored, and how many were dropped (counted as unmatched). A
    state that is not the JSON form is returned as it is."""
    import msgspec

    try:
        data = msgspec.json.decode(join_state)
    except msgspec.DecodeError:
        return join_state, None, 0
    if not isinstance(data, dict) or not isinstance(data.get("pending", []), list):
        return join_state, None, 0
    watermark = data.get("watermark")
    watermark = float(watermark) if isinstance(watermark, int | float) else None
    pending = data.get("pending") or []
    kept = [fb for fb in pending if isinstance(fb, dict) and isinstance(fb.get("ts"), int | float) and fb["ts"] <= to]
    dropped = len(pending) - len(kept)
    if not dropped:
        return join_state, watermark, 0
    data["pending"] = kept
    counters = data.get("counters")
    if isinstance(counters, dict):
        counters["held"] = max(0, int(counters.get("held", 0)) - dropped)
        counters["unmatched"] = int(counters.get("unmatched", 0)) + dropped
    return msgspec.json.encode(data), watermark, dropped


def _load(store: CheckpointStore, model: str, shard: str, to: float) -> _Loaded:
    """The shard's newest version that restores once sanitized (see :func:`_sanitize`), restored."""
    skipped: list[str] = []
    for version in store.shard_versions(model, shard):
        try:
            cp = store.load(model, shard, version)
            if cp is None:
                continue
            if not cp.join_state:
                raise CorruptState("its join state was not kept (only the newest versions keep it)")
            cp.join_state, watermark, dropped = _sanitize(cp.join_state, to)
            run = LearningRun.from_checkpoint(cp)
            source = dict(cp.source)
            max_ts = {str(k): float(v) for k, v in (source.get("max_ts") or {}).items()}
        except (CorruptState, ValueError, TypeError, KeyError, AttributeError) as exc:
            skipped.append(f"version {version}: {type(exc).__name__}: {exc}")
            continue
        return _Loaded(run=run, source=source, version=version, max_ts=max_ts,
                       watermark=run.join.watermark if watermark is None else watermark, dropped=dropped,
                       skipped=skipped)
    raise ValueError(f"model {model!r} shard {shard}: no stored version can be restored"
                     + (f" (newest {skipped[0]})" if skipped else ""))


def plan_repair(store: CheckpointStore, model: str, to: float, *, shards: list[str] | None = None,
                live_within: float = 300.0) -> list[ShardRepair]:
    """What :func:`apply_repair` would change, per shard of ``model`` (every shard, or ``shards``)
    that is written by ``consume``; shards with nothing after ``to`` come back with ``changed`` False."""
    heads = {h.shard: h for h in store.heads(model)}
    unknown = sorted(set(shards or ()) - set(heads))
    if unknown:
        raise ValueError(f"model {model!r} has no shard {', '.join(unknown)} (it has {', '.join(sorted(heads))})")
    leases = shard_leases(store, model)
    plans = []
    for name in shards or sorted(heads):
        head = heads[name]
        if head.source.get("kind") != "kafka":
            continue  # replay/simulate checkpoints have no live watermark to repair
        plan = _plan(_load(store, model, name, to), name, to)
        plan.lease = leases.get(name)
        plan.live = lease_is_live(plan.lease, head.created_at, live_within=live_within)
        plans.append(plan)
    return plans


def _plan(loaded: _Loaded, shard: str, to: float) -> ShardRepair:
    after, wm_after = clamp(loaded.max_ts, loaded.watermark, to, loaded.run.config.join.allowed_lateness)
    return ShardRepair(shard=shard, version=loaded.version, max_ts_before=dict(loaded.max_ts), max_ts_after=after,
                       watermark_before=loaded.watermark, watermark_after=wm_after, dropped_held=loaded.dropped,
                       skipped=loaded.skipped)


def apply_repair(store: CheckpointStore, model: str, to: float, shards: list[str], *, reason: str,
                 owner: str | None = None) -> list[ShardRepair]:
    """Claim ``shards`` and write one new, fenced version of each with its event time clamped to
    ``to`` (all in one transaction); returns what was written. Read after claiming, so a version
    written meanwhile is the one repaired."""
    owner = owner or f"{REPAIR_OWNER_PREFIX}{socket.gethostname()}:{os.getpid()}"
    fence = store.claim(model, shards, owner)
    done, snapshots = [], []
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for name in shards:
        loaded = _load(store, model, name, to)
        plan = _plan(loaded, name, to)
        loaded.run.join.watermark = plan.watermark_after  # lowered: set_watermark only moves it forward
        source = {**loaded.source, "max_ts": plan.max_ts_after, "watermark_repair": {
            "at": at, "to": to, "by": owner, "reason": reason, "from_version": plan.version,
            "max_ts_before": plan.max_ts_before, "watermark_before": plan.watermark_before,
            "held_feedback_dropped": plan.dropped_held}}
        snapshots.append(loaded.run.snapshot(source))
        done.append(plan)
    versions = store.save_many(snapshots, fence=fence)
    for plan, version in zip(done, versions, strict=True):
        plan.new_version = version
    return done
