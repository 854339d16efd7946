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

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_SIGN_SEED = 0x5BD1E995


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
    """

    spec: FeatureSpec = field(default_factory=FeatureSpec)

    def __post_init__(self) -> None:
        self._offset = int(self.spec.bias) + len(self.spec.numeric)
        self._slots = {name: int(self.spec.bias) + i for i, name in enumerate(self.spec.numeric)}
        self._hash_dim = self.spec.dim - self._offset
        self._cache: dict[str, tuple[int, float]] = {}

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _bucket(self, key: str) -> tuple[int, float]:
        hit = self._cache.get(key)
        if hit is None:
            raw = key.encode()
            index = self._offset + zlib.crc32(raw) % self._hash_dim
            sign = 1.0 if zlib.crc32(raw, _SIGN_SEED) & 1 else -1.0
            hit = (index, sign)
            if len(self._cache) < 1_000_000:
                self._cache[key] = hit
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
        for name, value in features.items():
            if isinstance(value, str):
                if hashed:
                    index, sign = bucket(f"{name}={value}")
                    x[index] += sign * 1.0
            elif name in slots:
                x[slots[name]] = value if type(value) is float else _as_double(value)
            else:
                number = float(value)
                if hashed:
                    index, sign = bucket(name)
                    x[index] += sign * number
        for a, b in self.spec.interactions:
            if a in features and b in features:
                key_a, num_a = _term(a, features[a])
                key_b, num_b = _term(b, features[b])
                if hashed:
                    index, sign = bucket(f"{key_a}*{key_b}")
                    x[index] += sign * (num_a * num_b)
        return x

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
