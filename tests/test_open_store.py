"""The join's columnar state (issue 12): the store, the due queue and the columnar snapshot."""

from __future__ import annotations

import msgspec
import pytest

from banditloop.core.events import Click, Impression
from banditloop.pipeline.join import EventJoin, JoinConfig
from banditloop.pipeline.join_state import COLUMNS, FULL, export_rows, read_header
from banditloop.pipeline.open_columns import ColumnsState, columns, load
from banditloop.pipeline.open_store import OpenStore


class Recorder:
    def __init__(self) -> None:
        self.closed: list[str] = []
        self.store = None  # the join sets it: vectors go there

    def on_impression(self, imp):  # type: ignore[no-untyped-def]
        imp.x = bytes(8 * 3) if imp.impression_id.endswith("x") else None

    def on_reward(self, imp, delta):  # type: ignore[no-untyped-def]
        pass

    def on_close(self, imp):  # type: ignore[no-untyped-def]
        self.closed.append(imp.impression_id)


def test_store_finds_reuses_slots_and_tells_generations_apart() -> None:
    store = OpenStore()
    ids = [f"imp-{i}" for i in range(5000)] + ["é" * 30, "u" * 100, "nul\0"]
    slots = {k: store.add(k, k + ":i", float(i), f"a{i % 7}", None, 3, i + 1) for i, k in enumerate(ids)}
    assert all(store.find(k) == s for k, s in slots.items()) and store.find("imp-x") == -1
    assert [store.id_of(slots[k]) for k in ids[-3:]] == ids[-3:]
    old = slots["imp-7"]
    gen = store.gen[old]
    store.remove(old)
    assert store.find("imp-7") == -1 and len(store) == len(ids) - 1
    again = store.add("new", "e", 1.0, "a0", 0.5, 2, 9)
    assert again == old and store.gen[again] != gen
    store.put_vectors(again, gen, bytes(16), None)  # a stale reference: ignored
    assert store.x_of(again) is None
    assert all(store.find(k) == s for k, s in slots.items() if k != "imp-7")


def test_closes_and_evictions_come_in_time_then_id_order_even_out_of_order() -> None:
    sink = Recorder()
    join = EventJoin(sink, config=JoinConfig(click_window=10.0, conversion_window=10.0,  # type: ignore[arg-type]
                                             allowed_lateness=100.0))
    for ts, imp_id in ((5.0, "b"), (5.0, "a"), (3.0, "z"), (7.0, "c"), (5.0, "0")):
        join.process(Impression(event_id=imp_id, ts=ts, impression_id=imp_id, arm="a"))
    join.set_watermark(16.0)
    assert sink.closed == ["z", "0", "a", "b"] and len(join.open) == 1
    join.set_watermark(1e9)
    assert sink.closed[-1] == "c" and join.counters["evicted"] == 5 and not join.open


def test_columnar_snapshot_round_trips_after_evictions_and_old_full_snapshots_load() -> None:
    def fill(join: EventJoin) -> None:
        for i in range(300):
            suffix = "x" if i % 3 else ""
            join.advance(float(i))
            join.process(Impression(event_id=f"e{i}", ts=float(i), impression_id=f"i{i}{suffix}", arm=f"a{i % 4}",
                                    context={"f": float(i)}, propensity=0.25, candidates=["a0", "a1"]))
            if i % 5 == 0:
                join.process(Click(event_id=f"c{i}", ts=float(i) + 1, impression_id=f"i{i}{suffix}"))

    config = JoinConfig(click_window=100.0, conversion_window=100.0, allowed_lateness=0.0)
    join = EventJoin(Recorder(), config=config)  # type: ignore[arg-type]
    fill(join)
    assert 0 < len(join.open) < 300  # some evicted: their slots reused
    state = {k: msgspec.msgpack.encode(v) for k, v in join.open.items()}
    for blob, kind in ((join.export_state(), COLUMNS), (export_rows(join), FULL)):
        header = read_header(blob)
        assert header is not None and header.kind == kind
        back = EventJoin(Recorder(), config=config)  # type: ignore[arg-type]
        back.import_state(bytes(blob))
        assert {k: msgspec.msgpack.encode(v) for k, v in back.open.items()} == state
        assert back.counters == join.counters and back.watermark == join.watermark
        back.set_watermark(1e9)  # closes what is open, in order
        assert back.counters["closed"] == join.counters["closed"] + sum(not v.closed for v in join.open.values())


def test_a_columnar_snapshot_whose_rows_disagree_is_refused_with_its_reason() -> None:
    store = OpenStore()
    for i in range(3):
        s = store.add(f"i{i}", f"e{i}", 5.0 + i, "a", 0.5, 3, 9)
        store.put_vectors(s, 0, bytes(16), None)
    state = msgspec.msgpack.decode(msgspec.msgpack.encode(columns(store, [], 1.0, {})), type=ColumnsState)
    for field, cut in (("ids", 1), ("xs", 8), ("ts", 8)):
        broken = msgspec.structs.replace(state, **{field: getattr(state, field)[:-cut]})
        with pytest.raises(ValueError, match="join state"):
            load(OpenStore(), broken)
