"""Turn flat feature objects (context, arm features) into fixed-length vectors.

Layout of a vector of length ``dim``:

* slot 0 is a constant bias of 1.0 (when ``bias=True``);
* the next ``len(numeric)`` slots hold the named numeric fields in the order given (``numeric`` is
  optional; it lets a known, dense feature set such as a simulator's ``x0..x{d-1}`` avoid collisions);
* every other feature is hashed into the remaining slots: a number ``name: v`` adds ``±v`` at
  ``h(name)``, a string ``name: "s"`` adds ``±1`` at ``h("name=s")`` (one-hot through the hashing
  trick), and an interaction ``(a, b)`` adds ``±value(a)·value(b)`` at ``h("a*b")``, where the value of a
  string feature is 1 and its key includes the string.

``h`` is CRC-32 (with a second CRC-32 for the sign, Weinberger et al. 2009), so vectors are identical
in every process and on every machine; Python's ``hash`` is salted per process and is never used.
"""

from __future__ import annotations

import sys
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_SIGN_SEED = 0x5BD1E995

#: Default memory budget of one featurizer's bucket cache (see :class:`Featurizer`). A typical entry
#: (a 20-character key) costs about 160 bytes, so 16 MiB remembers about 100,000 distinct keys.
DEFAULT_CACHE_BYTES = 16 * 1024 * 1024
#: Keys longer than this (in characters) are hashed every time and never cached: one 64 KiB string
#: would otherwise take the room of hundreds of ordinary keys, and hashing it costs little next to
#: reading it.
MAX_CACHED_KEY_CHARS = 256
#: Estimated bytes per cache entry besides the key string itself: the ordered dict's slot and link
#: node (the cached (index, sign) pairs are shared, one per slot and sign, so they cost nothing per entry).
CACHE_ENTRY_OVERHEAD = 104


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines a featurization; stored with every checkpoint.

    >>> spec = FeatureSpec(dim=16, numeric=("age",), interactions=(("country", "device"),))
    >>> FeatureSpec.from_dict(spec.to_dict()) == spec
    True
    """

    dim: int = 32
    numeric: tuple[str, ...] = ()
    interactions: tuple[tuple[str, str], ...] = ()
    bias: bool = True

    def __post_init__(self) -> None:
        reserved = int(self.bias) + len(self.numeric)
        if self.dim < 1:
            raise ValueError("dim must be >= 1")
        if reserved > self.dim:
            raise ValueError(f"dim={self.dim} is smaller than bias + numeric fields ({reserved})")

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "numeric": list(self.numeric),
            "interactions": [list(pair) for pair in self.interactions],
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FeatureSpec:
        return cls(
            dim=int(data["dim"]),
            numeric=tuple(data.get("numeric", ())),
            interactions=tuple((str(a), str(b)) for a, b in data.get("interactions", ())),
            bias=bool(data.get("bias", True)),
        )


@dataclass
class Featurizer:
    """Deterministic hashing featurizer; see the module docstring for the layout.

    >>> featurizer = Featurizer(FeatureSpec(dim=8, numeric=("age",)))
    >>> x = featurizer.transform({"age": 0.5, "country": "fr"})
    >>> x.shape, x[:2].tolist()      # bias, then the numeric fields in order, then hashed strings
    ((8,), [1.0, 0.5])
    >>> bool((x == featurizer.transform({"country": "fr", "age": 0.5})).all())
    True

    Hashing a key (two CRC-32s) is cached: a bounded LRU of at most ``cache_bytes`` bytes (estimated as
    the key's ``sys.getsizeof`` plus :data:`CACHE_ENTRY_OVERHEAD`), least recently used keys evicted
    first, keys over :data:`MAX_CACHED_KEY_CHARS` never cached; ``cache_bytes=0`` disables it. Feature
    strings come from requests and events, so without a budget every distinct value would be kept.
    The cache makes a featurizer unsafe to share between threads without a lock (the scorer holds
    its model's lock while featurizing).

    >>> small = Featurizer(FeatureSpec(dim=8), cache_bytes=2000)
    >>> _ = small.transform({f"k{i}": "v" for i in range(100)})
    >>> small.cache_info()["bytes"] <= 2000
    True
    """

    spec: FeatureSpec = field(default_factory=FeatureSpec)
    cache_bytes: int = field(default=DEFAULT_CACHE_BYTES, compare=False)

    def __post_init__(self) -> None:
        self._offset = int(self.spec.bias) + len(self.spec.numeric)
        self._slots = {name: int(self.spec.bias) + i for i, name in enumerate(self.spec.numeric)}
        self._hash_dim = self.spec.dim - self._offset
        self._cache: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._cache_used = 0
        self._evictions = 0
        # one shared (index, sign) tuple per slot and sign: cache entries hold references, not copies
        self._pairs = {(i, s): (i, s) for i in range(self._offset, self.spec.dim) for s in (1.0, -1.0)}
        self.set_cache_bytes(self.cache_bytes)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def set_cache_bytes(self, budget: int) -> None:
        """Change the cache's budget (bytes, ``>= 0``), evicting least recently used keys to fit."""
        if budget < 0:
            raise ValueError("cache_bytes must be >= 0")
        self.cache_bytes = int(budget)
        self._evict()

    def cache_info(self) -> dict[str, int]:
        """Entries, estimated bytes, budget and evictions so far of the bucket cache."""
        return {"entries": len(self._cache), "bytes": self._cache_used, "budget": self.cache_bytes,
                "evictions": self._evictions}

    def _evict(self) -> None:
        cache = self._cache
        while self._cache_used > self.cache_bytes and cache:
            key, _ = cache.popitem(last=False)
            self._cache_used -= sys.getsizeof(key) + CACHE_ENTRY_OVERHEAD
            self._evictions += 1

    def _bucket(self, key: str) -> tuple[int, float]:
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        raw = key.encode()
        index = self._offset + zlib.crc32(raw) % self._hash_dim
        sign = 1.0 if zlib.crc32(raw, _SIGN_SEED) & 1 else -1.0
        hit = self._pairs[(index, sign)]
        if len(key) <= MAX_CACHED_KEY_CHARS and self.cache_bytes:
            cache[key] = hit
            self._cache_used += sys.getsizeof(key) + CACHE_ENTRY_OVERHEAD
            if self._cache_used > self.cache_bytes:
                self._evict()
        return hit

    def _add(self, out: np.ndarray, key: str, value: float) -> None:
        if self._hash_dim <= 0:
            return  # every slot is reserved; unknown features are dropped by construction
        index, sign = self._bucket(key)
        out[index] += sign * value

    def transform(self, features: Mapping[str, float | str], out: np.ndarray | None = None) -> np.ndarray:
        """The vector for one flat feature object (written into ``out`` when given)."""
        if out is not None:
            return self._transform_into(features, out)
        return np.array(self.values(features))

    def values(self, features: Mapping[str, float | str]) -> list[float]:
        """:meth:`transform` as a Python list: the same arithmetic in the same order (IEEE doubles
        either way, so the results are bitwise equal), without a numpy operation per feature."""
        x = [0.0] * self.spec.dim
        if self.spec.bias:
            x[0] = 1.0
        slots = self._slots
        hashed = self._hash_dim > 0  # every slot reserved: unknown features are dropped by construction
        bucket = self._bucket
        # cache hits inlined (a method call per feature would cost more than the lookup itself)
        cached = self._cache.get
        touch = self._cache.move_to_end
        for name, value in features.items():
            if isinstance(value, str):
                if hashed:
                    key = f"{name}={value}"
                    hit = cached(key)
                    if hit is None:
                        index, sign = bucket(key)
                    else:
                        touch(key)
                        index, sign = hit
                    x[index] += sign * 1.0
            elif name in slots:
                x[slots[name]] = value if type(value) is float else _as_double(value)
            else:
                number = float(value)
                if hashed:
                    hit = cached(name)
                    if hit is None:
                        index, sign = bucket(name)
                    else:
                        touch(name)
                        index, sign = hit
                    x[index] += sign * number
        for a, b in self.spec.interactions:
            if a in features and b in features:
                key_a, num_a = _term(a, features[a])
                key_b, num_b = _term(b, features[b])
                if hashed:
                    index, sign = bucket(f"{key_a}*{key_b}")
                    x[index] += sign * (num_a * num_b)
        return x

    def matrix(self, rows: Sequence[Mapping[str, float | str]]) -> np.ndarray:
        """:meth:`transform` of every row, stacked, bit for bit (the same additions in the same order).

        Consecutive rows with the same keys in the same order and only numbers (a log's contexts, as a
        rule) share one layout: each column is placed or hashed once for all of them. Other rows, and
        every row when there are interactions, go through :meth:`values`.

        >>> f = Featurizer(FeatureSpec(dim=6, numeric=("a",)))
        >>> rows = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}, {"c": "x"}]
        >>> bool((f.matrix(rows) == np.array([f.values(r) for r in rows])).all())
        True
        """
        out = np.zeros((len(rows), self.spec.dim))
        if self.spec.bias:
            out[:, 0] = 1.0
        if self.spec.interactions:
            for i, row in enumerate(rows):
                out[i] = self.values(row)
            return out
        start = 0
        while start < len(rows):
            keys = tuple(rows[start])
            end = start + 1
            while end < len(rows) and tuple(rows[end]) == keys:
                end += 1
            self._fill(out[start:end], keys, rows[start:end])
            start = end
        return out

    def _fill(self, out: np.ndarray, keys: tuple[str, ...], rows: Sequence[Mapping[str, float | str]]) -> None:
        """Rows of ``out`` for ``rows``, which all have ``keys`` in that order."""
        values = np.array([list(row.values()) for row in rows]) if keys else np.zeros((len(rows), 0))
        if values.dtype != np.float64:  # strings among the values: row by row
            for i, row in enumerate(rows):
                out[i] = self.values(row)
            return
        slots = self._slots
        for j, name in enumerate(keys):
            if name in slots:
                out[:, slots[name]] = values[:, j]
            elif self._hash_dim > 0:
                index, sign = self._bucket(name)
                out[:, index] += sign * values[:, j]

    def _transform_into(self, features: Mapping[str, float | str], x: np.ndarray) -> np.ndarray:
        x[:] = self.values(features)
        return x

    def transform_many(self, rows: Sequence[Mapping[str, float | str]]) -> np.ndarray:
        out = np.zeros((len(rows), self.spec.dim))
        for i, row in enumerate(rows):
            self.transform(row, out[i])
        return out

    def cross(self, context: Mapping[str, float | str], arm_features: Mapping[str, float | str]) -> np.ndarray:
        """Shared features for hybrid models: arm features plus context × arm-feature products."""
        x = np.zeros(self.spec.dim)
        if self.spec.bias:
            x[0] = 1.0
        for name, value in arm_features.items():
            key, arm_val = _term(f"arm.{name}", value)
            self._add(x, key, arm_val)
            for cname, cvalue in context.items():
                ckey, cval = _term(cname, cvalue)
                self._add(x, f"{ckey}*{key}", cval * arm_val)
        return x


def _as_double(value: float | str) -> float:
    """``value`` converted as storing it into a float64 array converts it (same result, same errors)."""
    cell = np.zeros(1)
    cell[0] = value
    return float(cell[0])


def _term(name: str, value: float | str) -> tuple[str, float]:
    """Hash key and numeric value of one feature: a string is one-hot (``name=value``, 1.0)."""
    return (f"{name}={value}", 1.0) if isinstance(value, str) else (name, float(value))


def dense_names(prefix: str, d: int) -> tuple[str, ...]:
    """``("x0", ..., "x{d-1}")``: the numeric field names simulators use."""
    return tuple(f"{prefix}{i}" for i in range(d))


def as_context(names: Iterable[str], values: Iterable[float]) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, values, strict=True)}
