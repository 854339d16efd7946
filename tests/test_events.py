import gzip
import json

import pytest

from banditloop.core.events import Click, Conversion, Impression, InvalidEvent, decode_event, encode_event
from banditloop.pipeline.logs import StrictModeError, load_log


def imp(**kw):
    base = {"type": "impression", "event_id": "e1", "ts": 100.0, "impression_id": "i1", "arm": "a",
            "context": {"age": 31, "country": "fr"}}
    base.update(kw)
    return json.dumps(base)


def test_decodes_the_three_types_and_normalises_ts():
    ev = decode_event(imp(ts="1970-01-01T00:01:40Z", arm=7, candidates=["a", 7], propensity=0.5))
    assert isinstance(ev, Impression) and ev.ts == 100.0 and ev.arm == "7" and ev.candidates == ["a", "7"]
    assert ev.context == {"age": 31.0, "country": "fr"}
    click = decode_event('{"type":"click","event_id":"c1","ts":101.5,"impression_id":"i1"}')
    assert isinstance(click, Click) and click.ts == 101.5
    conv = decode_event('{"type":"conversion","event_id":"v1","ts":"1970-01-01T00:02:00+00:00",'
                        '"impression_id":"i1","value":3}')
    assert isinstance(conv, Conversion) and conv.value == 3.0 and conv.ts == 120.0


def test_round_trip_encoding():
    ev = decode_event(imp(user_id="u", position=2, policy="p", arm_features={"a": {"f": 1.0}}))
    assert decode_event(encode_event(ev)) == ev


@pytest.mark.parametrize("raw, reason", [
    ("not json", "not JSON"),
    ('{"type":"click","ts":1,"impression_id":"i"}', "event_id"),
    ('{"type":"view","event_id":"e","ts":1,"impression_id":"i"}', "schema"),
    (imp(ts="yesterday"), "RFC 3339"),
    (imp(ts="2026-01-01T00:00:00"), "timezone"),
    (imp(context={"a": [1, 2]}), "schema"),
    (imp(context={"a": 1e300}), "finite"),
    ('{"type":"click","event_id":"e","ts":1e999,"impression_id":"i"}', "ts: not an epoch time"),
    (imp(propensity=0.0), "propensity"),
    (imp(propensity=1.5), "propensity"),
    (imp(candidates=["b", "c"]), "not among the candidates"),
    (imp(arm=""), "schema"),
    (imp(event_id="x" * 300), "schema"),
    ('{"type":"conversion","event_id":"e","ts":1,"impression_id":"i","value":"NaN"}', "schema"),
])
def test_invalid_events_have_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as info:
        decode_event(raw)
    assert reason in info.value.reason


def test_oversized_event_is_refused_before_parsing():
    with pytest.raises(InvalidEvent, match="oversized"):
        decode_event(imp(context={f"k{i}": i for i in range(20_000)}))


def test_load_log_sorts_by_event_time_counts_invalid_and_reads_gzip(tmp_path):
    lines = [
        '{"type":"click","event_id":"c1","ts":105,"impression_id":"i1"}',
        "garbage",
        imp(ts=100.0),
        "",
        imp(event_id="e2", impression_id="i2", ts=105),
    ]
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    loaded = load_log(path)
    assert [type(e).__name__ for e in loaded.events] == ["Impression", "Impression", "Click"]
    assert loaded.invalid == 1 and loaded.errors[0][0] == 2 and loaded.lines == 4
    with pytest.raises(StrictModeError, match=":2:"):
        load_log(path, strict=True)


def test_dead_letter_file_truncates_huge_payloads(tmp_path):
    from banditloop.pipeline.dead_letters import MAX_DEAD_LETTER_PAYLOAD, DeadLetterFile

    dead = DeadLetterFile(tmp_path / "dead.jsonl")
    dead.raw(b"x" * (MAX_DEAD_LETTER_PAYLOAD + 100), "oversized: too big", "log:1")
    dead.close()
    record = json.loads((tmp_path / "dead.jsonl").read_text())
    assert len(record["payload"]) == MAX_DEAD_LETTER_PAYLOAD
    assert record["payload_truncated"] is True and record["payload_bytes"] == MAX_DEAD_LETTER_PAYLOAD + 100
