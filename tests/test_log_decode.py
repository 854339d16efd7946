"""``decode_log_event`` (replay's decoder) is ``decode_event``: the same events, the same refusals."""

import pytest

from banditloop.core.events import InvalidEvent, decode_event, decode_log_event

IMP = '{"type":"impression","event_id":"e","ts":%s,"impression_id":"i","arm":%s%s}'
LINES = [
    IMP % ("1", '"a"', ', "candidates": ["a", "b"], "context": {"x": 1.5, "c": "fr"}, "propensity": 0.5'),
    IMP % ("1", '"a"', ', "candidates": ["a", "b"]'),  # the same list again: shared
    IMP % ('"2024-01-01T00:00:00Z"', "2", ', "candidates": [1, 2]'),
    IMP % ("1", "3", ', "candidates": [1, 2]'),                  # arm not among them
    IMP % ('"yesterday"', "3", ', "candidates": [1, 2]'),          # bad time before the bad arm
    IMP % ("1", '"a"', ', "candidates": [1, 2.5]'),
    IMP % ("1", '"a"', ', "candidates": null'),
    IMP % ("1", '"a"', ', "candidates": []'),
    IMP % ("1", '"a"', ', "candidates": "a"'),
    IMP % ("1", '"a"', ', "candidates": [""]'),
    IMP % ("1", '"a"', ', "context": {"x": 1e999}'),
    IMP % ("1", '"a"', ', "arm_features": {"a": {"p": 1e10}}'),
    IMP % ("1e400", '"a"', ""),
    IMP % ("1", '"a"', ', "propensity": 0'),
    '{"type":"click","event_id":"c","ts":"2024-01-01T00:00:00+01:00","impression_id":"i"}',
    '{"type":"conversion","event_id":"v","ts":3,"impression_id":"i","value":2.5}',
    '{"type":"conversion","event_id":"v","ts":3,"impression_id":"i","value":1e300}',
    '{"type":"refund","event_id":"v","ts":3}', "{broken", "[]", "null",
    '{"type":"click","event_id":"c","ts":1,"impression_id":"%s"}' % ("x" * 70_000),
]


def _outcome(decode, line):
    try:
        return decode(line.encode())
    except InvalidEvent as exc:
        return exc.reason


@pytest.mark.parametrize("line", LINES)
def test_the_log_decoder_agrees_with_the_reference(line):
    assert _outcome(decode_log_event, line) == _outcome(decode_event, line)


def test_repeated_candidate_lists_are_decoded_once_and_shared():
    a, b = (decode_log_event(LINES[i].encode()) for i in (0, 1))
    assert a.candidates == ["a", "b"] and a.candidates is b.candidates
