"""Who may use the scoring service: optional bearer-token authentication.

A click is an instruction to the model, and a scored request is an impression the learners will
count, so a service reachable by others should not take either from anyone. With a token configured,
``POST /score`` and ``POST /feedback`` need ``Authorization: Bearer <token>`` (401 otherwise);
``GET /healthz`` and ``GET /metrics`` stay open for probes and scrapers unless asked otherwise.

Tokens come from the environment variable :data:`TOKEN_ENV` (never from a command-line argument,
which other users can read in the process list) or from a file with one token per line (blank lines
and ``#`` comments ignored): several tokens let a client move to a new one before the old one is
removed. Every comparison is constant-time (:func:`hmac.compare_digest`) and every token is compared,
so the answer's timing tells nothing about which token, or how much of one, was right.

>>> auth = BearerAuth(["s3cret-token-0123456789"])
>>> auth.allows("Bearer s3cret-token-0123456789"), auth.allows("Bearer wrong"), auth.allows(None)
(True, False, False)
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

#: the environment variable holding the token of ``banditloop serve``
TOKEN_ENV = "BANDITLOOP_API_TOKEN"
#: shorter tokens are refused: they could be guessed
MIN_TOKEN_LENGTH = 16


class BearerAuth:
    """Accepts ``Authorization: Bearer <t>`` for any of ``tokens``."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens]
        if not self._tokens:
            raise ValueError("no API token given")
        for token in self._tokens:
            if len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(f"API tokens must be at least {MIN_TOKEN_LENGTH} characters long")
            if any(c <= 0x20 or c >= 0x7F for c in token):
                raise ValueError("API tokens must be printable ASCII without spaces")

    @classmethod
    def configured(cls, token_file: str | Path | None = None,
                   environ: Mapping[str, str] | None = None) -> BearerAuth | None:
        """The tokens of ``$BANDITLOOP_API_TOKEN`` and ``token_file`` (either or both), or None when
        neither is set (no authentication). Raises ``ValueError`` for an unreadable file or a bad token."""
        environ = os.environ if environ is None else environ
        tokens: list[str] = []
        value = environ.get(TOKEN_ENV, "").strip()
        if value:
            tokens.append(value)
        if token_file:
            try:
                text = Path(token_file).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"API token file {str(token_file)!r}: {exc}") from None
            lines = [line.strip() for line in text.splitlines()]
            found = [line for line in lines if line and not line.startswith("#")]
            if not found:
                raise ValueError(f"API token file {str(token_file)!r} holds no token")
            tokens.extend(found)
        return cls(tokens) if tokens else None

    def allows(self, authorization: str | None) -> bool:
        """True when the ``Authorization`` header value carries one of the tokens."""
        if not authorization:
            return False
        scheme, _, credentials = authorization.partition(" ")
        try:
            given = credentials.strip().encode("ascii")
        except UnicodeEncodeError:
            return False
        ok = False
        for token in self._tokens:  # no early exit: every token is compared
            ok |= hmac.compare_digest(given, token)
        return ok and scheme.lower() == "bearer"
