"""Issue 13: conflicting duplicates (same identity, different content) are detected, dead-lettered
and counted; the first one wins. Identical redeliveries stay plain duplicates."""

from __future__ import annotations

import json

import msgspec

from banditloop.core.events import Click, Conversion, Impression, encode_event
from banditloop.core.reward import RewardSpec
from banditloop.pipeline.checkpoints import CheckpointStore
from banditloop.pipeline.join import EventJoin, JoinConfig, OpenImpression
from banditloop.pipeline.replay import ReplayOptions, replay_log
from tests.helpers import assert_states_equal
from tests.test_join import Recorder
from tests.test_replay import config


def imp(i: int, ts: float = 100.0, arm: str = "a", **context: float) -> Impression:
    return Impression(event_id=f"imp-{i}", ts=ts, impression_id=f"i{i}", arm=arm,
                      context=context or {"x": 1.0, "y": 2.0})


def make(reward: RewardSpec | None = None):
    sink, dead = Recorder(), []
    join = EventJoin(sink, reward=reward or RewardSpec(), config=JoinConfig(click_window=60, conversion_window=600),
                     dead_letter=lambda raw, reason, source: dead.append((json.loads(raw), reason)))
    return join, sink, dead


def test_an_impression_redelivered_identically_is_a_duplicate_with_other_content_a_conflict():
    join, sink, dead = make()
    assert join.process(imp(1)) == "impression"
    assert join.process(imp(1, y=2.0, x=1.0)) == "duplicate"  # same content, keys in another order
    assert join.process(imp(1, arm="b")) == "conflict"
    assert join.process(imp(1, ts=101.0)) == "conflict"
    assert sink.impressions == ["i1"] and join.open["i1"].arm == "a"  # the first one wins
    assert join.counters["duplicates"] == 1 and join.counters["conflicts"] == 2
    assert [reason.split(":")[0] for _, reason in dead] == ["conflicting duplicate"] * 2
    assert dead[0][0]["arm"] == "b" and "impression i1" in dead[0][1] and "first one wins" in dead[0][1]


def test_feedback_redelivered_with_other_content_is_a_conflict_and_changes_nothing():
    join, sink, dead = make(RewardSpec(kind="click+value"))
    join.process(imp(1))
    assert join.process(Conversion(event_id="v1", ts=110.0, impression_id="i1", value=5.0)) == "conversion"
    assert join.process(Conversion(event_id="v1", ts=110.0, impression_id="i1", value=5.0)) == "duplicate"
    assert join.process(Conversion(event_id="v1", ts=110.0, impression_id="i1", value=500.0)) == "conflict"
    assert join.process(Click(event_id="v1", ts=110.0, impression_id="i1")) == "conflict"  # another type
    assert sink.rewards == [("i1", 5.0)] and join.open["i1"].value_sum == 5.0
    assert (join.counters["duplicates"], join.counters["conflicts"]) == (1, 2)
    assert dead[0][0]["value"] == 500.0 and "conversion v1" in dead[0][1]


def test_held_feedback_conflicts_are_detected_before_the_impression_arrives():
    join, sink, dead = make()
    assert join.process(Click(event_id="c1", ts=105.0, impression_id="i1")) == "held"
    assert join.process(Click(event_id="c1", ts=105.0, impression_id="i1")) == "duplicate"
    assert join.process(Click(event_id="c1", ts=106.0, impression_id="i1")) == "conflict"
    join.process(imp(1))
    assert sink.rewards == [("i1", 1.0)] and join.counters["conflicts"] == 1 and join.counters["held"] == 0


def test_digests_survive_a_checkpoint_and_old_states_without_them_still_load():
    join, _, _ = make(RewardSpec(kind="click+value"))  # (a reward that joins conversions)
    join.process(imp(1))
    join.process(Click(event_id="c1", ts=105.0, impression_id="i1"))
    restored, _, dead = make(RewardSpec(kind="click+value"))
    restored.import_state(join.export_state())
    assert restored.process(Click(event_id="c1", ts=107.0, impression_id="i1")) == "conflict"
    assert restored.process(imp(1, arm="z")) == "conflict" and len(dead) == 2
    # a state written before digests existed: the open impression's array ends after ``closed``
    # (JSON, as join states were written then)
    state = msgspec.json.decode(msgspec.json.encode({
        "open": list(join.open.values()), "pending": [fb for held in join.pending.values() for fb in held],
        "watermark": join.watermark, "counters": dict(join.counters)}))
    cut = OpenImpression.__struct_fields__.index("digest")
    state["open"] = [row[:cut] for row in state["open"]]
    old, _, dead = make(RewardSpec(kind="click+value"))
    old.import_state(msgspec.json.encode(state))
    assert old.open["i1"].digest == 0 and old.open["i1"].seen == ("c1",) and old.open["i1"].seen_digests == ()
    # what it holds has no digest: a redelivery counts as a plain duplicate, as before
    assert old.process(imp(1, arm="z")) == "duplicate"
    assert old.process(Click(event_id="c1", ts=107.0, impression_id="i1")) == "duplicate"
    # feedback joined from now on has one
    assert old.process(Conversion(event_id="v1", ts=110.0, impression_id="i1")) == "conversion"
    assert old.process(Conversion(event_id="v1", ts=111.0, impression_id="i1")) == "conflict"
    assert old.process(Click(event_id="c1", ts=107.0, impression_id="i1")) == "duplicate" and not dead[:-1]


def test_replay_dead_letters_a_conflicting_duplicate_and_learns_the_first(tmp_path):
    events = [imp(i, ts=100.0 + i, arm="ab"[i % 2], x0=0.1 * i) for i in range(40)]
    events += [Click(event_id=f"c{i}", ts=110.0 + i, impression_id=f"i{i}") for i in range(0, 40, 3)]
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    messy = tmp_path / "messy.jsonl"
    extra = [imp(5, ts=105.0, arm="b", x0=0.5),                                  # identical: a duplicate
             imp(5, ts=105.0, arm="a", x0=0.5),                                  # another arm: a conflict
             Click(event_id="c3", ts=150.0, impression_id="i3")]                 # another time: a conflict
    messy.write_bytes(clean.read_bytes() + b"".join(encode_event(e) + b"\n" for e in extra))
    store = CheckpointStore(f"sqlite:///{tmp_path / 'r.db'}")
    dead = tmp_path / "dead.jsonl"
    first = replay_log(clean, config(), "clean", store, ReplayOptions(quiet=True))
    second = replay_log(messy, config(), "messy", store, ReplayOptions(quiet=True, dead_letters=dead))
    assert (first["conflicts"], second["conflicts"], second["duplicates"]) == (0, 2, 1)
    assert [json.loads(line)["reason"].split(":")[0] for line in dead.read_text().splitlines()] == [
        "conflicting duplicate"] * 2
    assert_states_equal(store.latest("messy").state, store.latest("clean").state, rtol=0, atol=0)
    store.close()
