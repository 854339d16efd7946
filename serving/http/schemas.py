"""Request and response bodies of the scoring service, decoded and checked with msgspec.

A request body is decoded straight into a :class:`ScoreRequest` struct (strict types: a string is
never a number, ``true`` is not ``1``, nested objects are refused, unknown fields are refused so that
a typo such as ``"candidate"`` is an error rather than a silently ignored field). What a schema
cannot express is checked in :func:`decode_score_request`: finite numbers within ``±MAX_ABS_VALUE``,
distinct candidates, ``k`` no larger than the candidate list, arm features only for candidates, and
the service's configurable limits. Every failure is a :class:`RequestError` carrying the HTTP status
and a one-line reason; nothing is ever unpickled or evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from banditloop.core.events import MAX_ABS_VALUE, MAX_CANDIDATES, MAX_FEATURES, MAX_ID_LENGTH

#: hard ceilings of the schema; :class:`Limits` sets the (lower) limits actually enforced
MAX_K = 1000
MAX_STRING_VALUE = 1024
_INT64 = 2**63

_Key = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
if TYPE_CHECKING:
    _Arm = str  # after decode_score_request: integer ids are normalised to their decimal string
else:
    _Arm = _Id | Annotated[int, msgspec.Meta(ge=-_INT64, le=_INT64 - 1)]
_Value = float | Annotated[str, msgspec.Meta(max_length=MAX_STRING_VALUE)]
FeatureMap = dict[_Key, _Value]


class RequestError(Exception):
    """A request the service refuses: ``status`` (4xx, or 503) and a human-readable ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Defaults keep a request (and the impression event it produces,
    which must fit the consumer's ``MAX_EVENT_BYTES``) small; the command line can raise them up to
    the schema's ceilings."""

    max_body_bytes: int = 64 * 1024
    max_candidates: int = 1000
    max_features: int = 256
    max_k: int = 100
    #: seconds a request body may take to arrive in full (408 after that); None: no limit
    body_timeout: float | None = 10.0

    def __post_init__(self) -> None:
        if self.body_timeout is not None and not self.body_timeout > 0:
            raise ValueError("body_timeout must be > 0")
        if not 1 <= self.max_candidates <= MAX_CANDIDATES:
            raise ValueError(f"max_candidates must be in [1, {MAX_CANDIDATES}]")
        if not 1 <= self.max_features <= MAX_FEATURES:
            raise ValueError(f"max_features must be in [1, {MAX_FEATURES}]")
        if not 1 <= self.max_k <= MAX_K:
            raise ValueError(f"max_k must be in [1, {MAX_K}]")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be >= 1024")


class ScoreRequest(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /score``: choose among ``candidates`` (ids: strings, or integers taken as their decimal
    string) for ``context``; ``k > 1`` asks for a ranked slate of ``k`` arms."""

    candidates: Annotated[list[_Arm], msgspec.Meta(min_length=1, max_length=MAX_CANDIDATES)]
    context: Annotated[FeatureMap, msgspec.Meta(max_length=MAX_FEATURES)] = {}
    arm_features: Annotated[dict[_Key, Annotated[FeatureMap, msgspec.Meta(max_length=MAX_FEATURES)]],
                            msgspec.Meta(max_length=MAX_CANDIDATES)] | None = None
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = 1
    user_id: _Id | None = None
    request_id: _Id | None = None
    #: value of a conversion (or, for a click model, of a click: a bid) per candidate; 1 when not given
    values: Annotated[dict[_Key, float], msgspec.Meta(max_length=MAX_CANDIDATES)] | None = None
    #: "model" (the model's own choice) or "expected_value"; None: the service's ``--rank-by``
    rank_by: Literal["model", "expected_value"] | None = None


class SlateItem(msgspec.Struct):
    """One shown arm: its position (0 = first), the propensity logged for it and its impression id."""

    arm: str
    position: int
    propensity: float | None
    impression_id: str


class ScoreResponse(msgspec.Struct, omit_defaults=True):
    impression_id: str
    arm: str
    propensity: float | None
    model: str
    version: int
    policy: str
    slate: list[SlateItem]
    #: null for a non-finite score (never expected; never a 500 either)
    scores: dict[str, float | None]
    request_id: str | None = None
    #: of the chosen arm, when the model predicts them (absent otherwise; :mod:`banditloop.serving.values`)
    pctr: float | None = None
    pcvr: float | None = None
    expected_value: float | None = None


class FeedbackResponse(msgspec.Struct):
    accepted: bool
    type: str
    event_id: str
    impression_id: str


_score_decoder = msgspec.json.Decoder(ScoreRequest)
encoder = msgspec.json.Encoder()


def decode_score_request(body: bytes, limits: Limits) -> ScoreRequest:
    """The validated request; raises :class:`RequestError` (400 malformed JSON, 422 invalid)."""
    try:
        req = _score_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise RequestError(422, f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None
    n = len(req.candidates)
    if n > limits.max_candidates:
        raise RequestError(422, f"candidates: {n} given, at most {limits.max_candidates} allowed")
    # integer ids are taken as their decimal string, as in the event model
    candidates: list[str] = [c if isinstance(c, str) else str(c) for c in req.candidates]
    if len(set(candidates)) != n:
        raise RequestError(422, "candidates: duplicate ids")
    req.candidates = candidates
    if req.k > limits.max_k:
        raise RequestError(422, f"k: {req.k} requested, at most {limits.max_k} allowed")
    if req.k > n:
        raise RequestError(422, f"k: {req.k} requested but only {n} candidates given")
    _check_features("context", req.context, limits)
    if req.arm_features is not None:
        known = set(candidates)
        for arm, feats in req.arm_features.items():
            if arm not in known:
                raise RequestError(422, f"arm_features: {arm!r} is not among the candidates")
            _check_features(f"arm_features.{arm}", feats, limits)
    if req.values is not None:
        known = set(candidates)
        for arm, value in req.values.items():
            if arm not in known:
                raise RequestError(422, f"values: {arm!r} is not among the candidates")
            if not (math.isfinite(value) and 0.0 <= value <= MAX_ABS_VALUE):
                raise RequestError(422, f"values.{arm}: not a finite number in [0, {MAX_ABS_VALUE:g}]")
    return req


def _check_features(name: str, features: dict[str, float | str], limits: Limits) -> None:
    if len(features) > limits.max_features:
        raise RequestError(422, f"{name}: {len(features)} features, at most {limits.max_features} allowed")
    for key, value in features.items():
        if type(value) is float and not (math.isfinite(value) and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE):
            raise RequestError(422, f"{name}.{key}: not a finite number within ±{MAX_ABS_VALUE:g}")
