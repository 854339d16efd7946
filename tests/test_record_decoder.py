"""The batch decoder of poll batches gives exactly what record-by-record decoding gives: the same
events (normalised alike) and the same dead letters, in the same order."""

from __future__ import annotations

import time

from kafka import TopicPartition

from banditloop.core.events import MAX_EVENT_BYTES, Click, Impression
from banditloop.pipeline.record_decoder import RecordDecoder

NOW = time.time()

IMPRESSIONS = [
    b'{"type":"impression","event_id":"e1","ts":%d,"impression_id":"i1","arm":"a1","context":{"x":1.0}}' % NOW,
    b'{"type":"impression","event_id":"e2","ts":%d,"impression_id":"i2","arm":"a1","candidates":["a0","a1"]}' % NOW,
    b'{"type":"impression","event_id":"e3","ts":%d,"impression_id":"i3","arm":7,"candidates":[3,7]}' % NOW,
    b'{"type":"impression","event_id":"e4","ts":%d,"impression_id":"i4","arm":"a9","candidates":["a0"]}' % NOW,
    b'{"type":"impression","event_id":"e5","ts":"2024-05-01T12:00:00Z","impression_id":"i5","arm":"a1"}',
    b'{"type":"impression","event_id":"e6","ts":%d,"impression_id":"i6","arm":"a1"}' % (NOW + 10_000),
    b'{"type":"click","event_id":"c1","ts":%d,"impression_id":"i1"}' % NOW,
    b'{"type":"impression","event_id":"e7","ts":1e400,"impression_id":"i7","arm":"a1"}',
    b'{"type":"impression","event_id":"e8","ts":%d,"impression_id":"i8","arm":"a1","propensity":0}' % NOW,
    b'{"type":"impression","event_id":"e9","ts":%d,"impression_id":"i9","arm":"a1"} {}' % NOW,
    b"x" * (MAX_EVENT_BYTES + 1),
    None,
    b'{"type":"impression","event_id":"e10","ts":%d,"impression_id":"i10","arm":2,"candidates":[1,2]}' % NOW,
]


def decoded(batch: bool, values, expected):
    dead = []
    decoder = RecordDecoder(lambda raw, reason, source: dead.append((raw, reason, source)))
    tp = TopicPartition("topic", 3)
    offsets = list(range(100, 100 + len(values)))
    if batch:
        events = decoder.decode_batch(values, offsets, tp, expected)
    else:
        events = [decoder.decode(v, o, tp, expected) for v, o in zip(values, offsets, strict=True)]
    return events, dead, decoder.invalid


def test_batch_decoding_equals_one_record_at_a_time():
    for values, expected in ((IMPRESSIONS, Impression), (IMPRESSIONS[:4] + IMPRESSIONS[12:], Impression),
                             (IMPRESSIONS[6:7] * 3, Click), (IMPRESSIONS[:2], Click)):
        one = decoded(False, values, expected)
        assert decoded(True, values, expected) == one
    events, dead, invalid = decoded(True, IMPRESSIONS[:4] + IMPRESSIONS[12:], Impression)
    assert [e.arm for e in events if e is not None] == ["a1", "a1", "7", "2"]
    assert events[2].candidates == ["3", "7"] and events[3] is None
    assert [reason for _, reason, _ in dead] == ["arm: not among the candidates"] and invalid == 1
