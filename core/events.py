"""The event model: impressions, clicks and conversions, one JSON object each.

Events are decoded with msgspec (strict types, tagged on ``type``) and then checked for what a
schema cannot express: finite numbers, a flat context, a propensity in (0, 1]. Anything that fails
raises :class:`InvalidEvent` with a human-readable reason; callers count it and dead-letter it.

Timestamps (``ts``) are epoch seconds as a float, or an RFC 3339 string; both are normalised to a
float on decoding so that the rest of the pipeline works with one representation.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

ArmId = str
FeatureValue = float | str
Context = dict[str, FeatureValue]

#: Upper bounds that keep one bad producer from blowing up memory in a long-running consumer.
MAX_EVENT_BYTES = 64 * 1024
MAX_FEATURES = 1024
MAX_CANDIDATES = 10_000
MAX_ID_LENGTH = 256
#: Numbers beyond this magnitude are refused: squared in a learner they would overflow to inf.
MAX_ABS_VALUE = 1e9
#: Event times are epoch seconds in [0, MAX_TS] (MAX_TS is 3000-01-01): anything else is an error, not
#: a date, wherever it enters (logs, topics, ``produce``, ``/feedback``).
MAX_TS = 32_503_680_000.0
#: Default tolerance for event times ahead of the receiver's clock (live entry points only): more is a
#: producer's clock or an attacker, and would drag the event-time watermark into the future.
DEFAULT_MAX_FUTURE_SKEW = 300.0

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
if TYPE_CHECKING:
    # What code after :func:`decode_event` sees: every ``ts`` is epoch seconds and every arm, candidate
    # and id a string (the decoder normalises them). Build events with these types.
    _ArmIn = str
    _Timestamp = float
    _Number = float
    _Features = dict[str, float | str]
    _Candidates = list[str]
    _ArmFeatures = dict[str, dict[str, float | str]]
    _Position = int
    _Propensity = float
else:
    # What the wire accepts: RFC 3339 timestamps and integer arm ids too. Ranges and sizes are checked
    # by msgspec while it decodes (in C), so a hostile event costs no more than a valid one.
    _ArmIn = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)] | int
    _Timestamp = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_TS)] | str
    #: numbers in features and values: finite and within ±MAX_ABS_VALUE (1e999 parses as inf: refused)
    _Number = Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
    _Features = Annotated[dict[str, _Number | str], msgspec.Meta(max_length=MAX_FEATURES)]
    _Candidates = Annotated[list[_ArmIn], msgspec.Meta(max_length=MAX_CANDIDATES)]
    _ArmFeatures = Annotated[dict[str, _Features], msgspec.Meta(max_length=MAX_CANDIDATES)]
    _Position = Annotated[int, msgspec.Meta(ge=0)]
    _Propensity = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]


class InvalidEvent(ValueError):
    """An event that cannot be applied. ``reason`` is short and stable enough to aggregate on.

    >>> try:
    ...     decode_event(b'{"type": "click", "event_id": "c1", "ts": 1e400, "impression_id": "i1"}')
    ... except InvalidEvent as exc:
    ...     print(exc.reason)
    ts: not an epoch time in seconds between 0 and 32503680000 (year 3000)
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Impression(msgspec.Struct, tag="impression", tag_field="type", kw_only=True, omit_defaults=True):
    """An arm shown in a context, with the probability the policy had of showing it.

    >>> imp = Impression(event_id="e1", ts=1700000000.0, impression_id="i1", arm="ad-7",
    ...                  context={"country": "fr", "age": 0.3}, propensity=0.25)
    >>> decode_event(encode_event(imp)) == imp
    True
    """

    event_id: _Id
    ts: _Timestamp
    impression_id: _Id
    arm: _ArmIn
    context: _Features = {}
    user_id: str | None = None
    candidates: _Candidates | None = None
    arm_features: _ArmFeatures | None = None
    position: _Position | None = None
    propensity: _Propensity | None = None
    policy: str | None = None


class Click(msgspec.Struct, tag="click", tag_field="type", kw_only=True, omit_defaults=True):
    """A click on the impression ``impression_id``, at its own event time.

    >>> decode_event(b'{"type": "click", "event_id": "c1", "ts": "2024-05-01T12:00:00Z", "impression_id": "i1"}')
    Click(event_id='c1', ts=1714564800.0, impression_id='i1')
    """

    event_id: _Id
    ts: _Timestamp
    impression_id: _Id


class Conversion(msgspec.Struct, tag="conversion", tag_field="type", kw_only=True, omit_defaults=True):
    """A conversion (with an optional ``value``) attributed to the impression ``impression_id``.

    >>> Conversion(event_id="v1", ts=1700003600.0, impression_id="i1", value=19.9).value
    19.9
    """

    event_id: _Id
    ts: _Timestamp
    impression_id: _Id
    value: _Number | None = None


Event = Impression | Click | Conversion
Feedback = Click | Conversion

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def parse_ts(ts: float | str) -> float:
    """Epoch seconds from a float or an RFC 3339 string (``2026-01-02T03:04:05.5Z``)."""
    if isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError as exc:
            raise InvalidEvent(f"ts: not an RFC 3339 timestamp: {ts!r}") from exc
        if dt.tzinfo is None:
            raise InvalidEvent(f"ts: RFC 3339 timestamp needs a timezone offset: {ts!r}")
        value = dt.timestamp()
    else:
        value = float(ts)
    # one chained comparison: False for NaN and ±inf too
    if not 0.0 <= value <= MAX_TS:
        raise InvalidEvent(f"ts: not an epoch time in seconds between 0 and {MAX_TS:.0f} (year 3000)")
    return value


def check_not_future(event: Event, now: float, max_skew: float = DEFAULT_MAX_FUTURE_SKEW) -> None:
    """Refuse an event whose time is more than ``max_skew`` seconds after ``now`` (the receiver's
    clock). For live entry points (``consume``, ``/feedback``); replayed and simulated streams have
    their own clocks and skip it.

    >>> check_not_future(Click(event_id="c", ts=1000.0, impression_id="i"), now=900.0)
    >>> try:
    ...     check_not_future(Click(event_id="c", ts=1e10, impression_id="i"), now=900.0)
    ... except InvalidEvent as exc:
    ...     print(exc.reason)
    future ts: 9999999100 s ahead of this clock (more than the allowed 300 s)
    """
    ahead = event.ts - now
    if ahead > max_skew:
        raise InvalidEvent(f"future ts: {ahead:.0f} s ahead of this clock (more than the allowed {max_skew:g} s)")


def _validate(event: Event) -> Event:
    """What msgspec's constraints cannot say: RFC 3339 times, integer ids as strings, the shown arm
    among the candidates."""
    if event.ts.__class__ is str:
        event.ts = parse_ts(event.ts)
    if isinstance(event, Impression):
        if event.arm.__class__ is not str:
            event.arm = str(event.arm)
        if event.candidates is not None:
            event.candidates = list(map(str, event.candidates))
            if event.arm not in event.candidates:
                raise InvalidEvent("arm: not among the candidates")
    return event


_RANGE_REASONS = {
    "$.ts": f"ts: not an epoch time in seconds between 0 and {MAX_TS:.0f} (year 3000)",
    "$.propensity": "propensity: must be in (0, 1]",
    "$.position": "position: must be >= 0",
    "$.value": f"value: not a finite number within ±{MAX_ABS_VALUE:g}",
}


def _explain(raw: bytes | str, message: str) -> str:
    """The reason for a refused event. msgspec does not name the dict key at fault (``$.context[...]``):
    for features, find it (on the error path only, so valid events pay nothing for it)."""
    out_of_range = "Expected `float` >" in message or "Expected `float` <" in message or "out of range" in message \
        or "Expected `int` >" in message
    if out_of_range:
        for path, reason in _RANGE_REASONS.items():
            if message.endswith(f"`{path}`"):
                return reason
    if "$.context" in message or "$.arm_features" in message:
        try:
            obj = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            obj = None
        if isinstance(obj, dict):
            groups = [("context", obj.get("context"))]
            if isinstance(obj.get("arm_features"), dict):
                groups += [(f"arm_features.{arm}", feats) for arm, feats in obj["arm_features"].items()]
            for name, feats in groups:
                if not isinstance(feats, dict):
                    continue
                if len(feats) > MAX_FEATURES:
                    return f"{name}: {len(feats)} features, more than {MAX_FEATURES}"
                for key, value in feats.items():
                    if isinstance(value, int | float) and not isinstance(value, bool) \
                            and not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
                        return f"{name}.{key}: not a finite number within ±{MAX_ABS_VALUE:g}"
    return f"schema: {message}"


def decode_event(raw: bytes | str) -> Event:
    """Decode and validate one JSON event; raises :class:`InvalidEvent` with the reason."""
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"oversized: {len(raw)} bytes, more than {MAX_EVENT_BYTES}")
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_explain(raw, str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    return _validate(event)


class _LoggedImpression(msgspec.Struct, tag="impression", tag_field="type", kw_only=True, gc=False):
    """:class:`Impression` as :func:`decode_log_event` reads it: the candidates are kept raw and decoded
    once per distinct list (a log repeats the same candidate list on most lines)."""

    event_id: _Id
    ts: _Timestamp
    impression_id: _Id
    arm: _ArmIn
    context: _Features = {}
    user_id: str | None = None
    candidates: msgspec.Raw = msgspec.Raw(b"null")
    arm_features: _ArmFeatures | None = None
    position: _Position | None = None
    propensity: _Propensity | None = None
    policy: str | None = None


_log_decoder = msgspec.json.Decoder(_LoggedImpression | Click | Conversion)
_candidates_decoder = msgspec.json.Decoder(_Candidates | None)
#: decoded candidate lists by their raw bytes: (list, set) shared by every event that repeats them
_candidate_lists: dict[bytes, tuple[list[str], frozenset[str]] | None] = {}
_MAX_CANDIDATE_LISTS = 1024


def decode_log_event(raw: bytes) -> Event:
    """:func:`decode_event` for logs and other streams that repeat candidate lists: the same event, the
    same checks (and, for a refused line, the same reason), about twice as fast on typical impressions.

    Each distinct candidate list is decoded and checked once and then shared, read-only, by every
    event that repeats it (``candidates`` of such events is the same list object: do not mutate it).

    >>> line = b'{"type":"impression","event_id":"e","ts":1,"impression_id":"i","arm":2,"candidates":[1,2]}'
    >>> decode_log_event(line) == decode_event(line)
    True
    """
    if len(raw) > MAX_EVENT_BYTES:
        return decode_event(raw)  # raises, with today's reason
    try:
        event = _log_decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError too: the reference decoder says why
        return decode_event(raw)
    if event.__class__ is not _LoggedImpression:
        if event.ts.__class__ is str:
            event.ts = parse_ts(event.ts)
        return event
    key = bytes(event.candidates)
    if key in _candidate_lists:
        cached = _candidate_lists[key]
    else:
        try:
            listed = _candidates_decoder.decode(key)
        except msgspec.DecodeError:
            return decode_event(raw)
        cached = None if listed is None else (list(map(str, listed)), frozenset(map(str, listed)))
        if len(_candidate_lists) >= _MAX_CANDIDATE_LISTS:
            _candidate_lists.clear()
        _candidate_lists[key] = cached
    ts = event.ts if event.ts.__class__ is not str else parse_ts(event.ts)
    arm = event.arm if event.arm.__class__ is str else str(event.arm)
    if cached is not None and arm not in cached[1]:
        raise InvalidEvent("arm: not among the candidates")
    return Impression(event_id=event.event_id, ts=ts, impression_id=event.impression_id, arm=arm,
                      context=event.context, user_id=event.user_id,
                      candidates=None if cached is None else cached[0], arm_features=event.arm_features,
                      position=event.position, propensity=event.propensity, policy=event.policy)


def encode_event(event: Event) -> bytes:
    """Compact JSON for a validated event (``ts`` as epoch seconds)."""
    return _encoder.encode(event)


def event_ts(event: Event) -> float:
    """The event time of a decoded (hence normalised) event."""
    return event.ts


#: Processing order for events with equal timestamps: an impression before its feedback.
TYPE_ORDER: dict[type, int] = {Impression: 0, Click: 1, Conversion: 2}

EventType = Literal["impression", "click", "conversion"]
