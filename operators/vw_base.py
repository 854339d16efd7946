"""Shared machinery of the Vowpal Wabbit learners (:mod:`banditloop.operators.vw_cb`,
:mod:`banditloop.operators.vw_ctr`): the VW workspace, the text format, and state as VW's own model bytes.

**State.** VW's model file (``Workspace.save``: the weights and every reduction's state, saved for
continued training, as VW 9 does by default) is kept as the global array ``vw_model``: one float per
byte (0-255), so it travels with the other arrays through the checkpoint's ``.npz`` (read with
``allow_pickle=False``: no pickle anywhere). VW has no in-memory model API in Python, so export and
import go through a private temporary file. VW zeroes its progress statistics (loss sums, example
counts used for its console output) when it loads a model, so the exported bytes are those of the
model *as loaded*: saved, loaded and saved again, a canonical form in which two learners with the
same weights and reduction states export identical bytes, and a restored learner continues exactly
like the original (tested). VW reads a truncated or altered model file without complaint, so the
bytes' length and CRC-32 are stored beside them (``vw_model_check``) and a mismatch is refused.
Per-arm ``n`` (impressions) and ``clicks`` (reward sum) are kept beside it.

**Merge is refused**: VW's weights are not sufficient statistics, and averaging them is not
what either shard learned (VW's own ``merge_models`` averages weights of models trained on the same
stream only approximately). A VW model must be learned by one shard: one ``consume`` worker on
single-partition topics, or ``replay``/``simulate``; a scorer that finds several shards refuses the
model (``merge`` raises), and the old model keeps serving.

**Features.** The context vector ``x`` is written sparsely as namespace ``x`` (``x``'s slot index as
the feature name, zero entries omitted); an arm is the feature ``arm=<id>`` of namespace ``a``, with its
id escaped (``%``, whitespace, ``:`` and ``|`` percent-encoded), so any string id is safe.
Per-arm shared vectors (hybrid models) are not used.
"""

from __future__ import annotations

import os
import re
import tempfile
import zlib
from collections.abc import Mapping

import numpy as np

from banditloop.operators.base import Learner

MODEL_ARRAY = "vw_model"
#: ``[length, CRC-32]`` of the model bytes: VW loads a truncated model file without complaint
CHECK_ARRAY = "vw_model_check"
_UNSAFE = re.compile(r"[%\s:|]")


def escape(token: str) -> str:
    """A VW-safe feature token: ``%``, whitespace, ``:`` and ``|`` percent-encoded."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), token)


def context_features(x: np.ndarray) -> str:
    """``x`` as VW features ``i:value`` (zero entries omitted; ``repr`` keeps every digit)."""
    arr = np.asarray(x, dtype=float)
    nz = np.flatnonzero(arr)
    return " ".join(f"{i}:{v!r}" for i, v in zip(nz.tolist(), arr[nz].tolist(), strict=True))


class VWModel(Learner):
    """Base of the VW learners: owns ``self.vw`` (a ``vowpalwabbit.Workspace`` built from :meth:`vw_args`)."""

    exact_merge = False
    additive_arrays = ("n", "clicks")
    derived_arrays = (MODEL_ARRAY, CHECK_ARRAY)

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__(dim, seed)
        self._arm_text: dict[str, str] = {}
        self.vw = self._workspace()

    # -- VW -----------------------------------------------------------------------------------
    def vw_args(self) -> str:
        """VW's command line for this learner's hyper-parameters (without ``--quiet``)."""
        raise NotImplementedError

    def _workspace(self, model_file: str | None = None):
        from vowpalwabbit import Workspace

        args = f"{self.vw_args()} --random_seed {self.seed} --quiet"
        if model_file is not None:
            args += f" --initial_regressor {model_file}"
        try:
            return Workspace(args)
        except Exception as exc:  # VW raises plain RuntimeErrors for bad options and corrupt models
            raise ValueError(f"{self.kind}: Vowpal Wabbit refused {args!r}: {exc}") from None

    def _arm_feature(self, arm: str) -> str:
        text = self._arm_text.get(arm)
        if text is None:
            text = self._arm_text[arm] = f"|a arm={escape(arm)}"
        return text

    def model_bytes(self) -> bytes:
        """VW's model file of the current state, in the canonical form (see the module docstring)."""
        fd, path = tempfile.mkstemp(prefix="banditloop-vw-", suffix=".model")
        os.close(fd)
        try:
            self.vw.save(path)
            reloaded = self._workspace(path)
            reloaded.save(path)
            reloaded.finish()
            with open(path, "rb") as fh:
                return fh.read()
        finally:
            os.unlink(path)

    def _load_model(self, data: bytes) -> None:
        fd, path = tempfile.mkstemp(prefix="banditloop-vw-", suffix=".model")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            workspace = self._workspace(path)
        finally:
            os.unlink(path)
        old, self.vw = self.vw, workspace
        old.finish()

    # -- arrays -------------------------------------------------------------------------------
    def _arm_arrays(self):
        return {"n": ((), 0.0), "clicks": ((), 0.0)}

    def _global_arrays(self):
        return {MODEL_ARRAY: ((0,), 0.0), CHECK_ARRAY: ((2,), 0.0)}

    def _state_arrays(self) -> dict[str, np.ndarray]:
        out = super()._state_arrays()
        data = self.model_bytes()
        out[MODEL_ARRAY] = np.frombuffer(data, dtype=np.uint8).astype(float)
        out[CHECK_ARRAY] = np.array([len(data), zlib.crc32(data)], dtype=float)
        return out

    def _load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        missing = [name for name in (MODEL_ARRAY, CHECK_ARRAY) if name not in arrays]
        if missing:
            raise ValueError(f"{self.kind}: state lacks arrays {missing}")
        rest = {k: v for k, v in arrays.items() if k not in (MODEL_ARRAY, CHECK_ARRAY)}
        check = np.asarray(arrays[CHECK_ARRAY], dtype=float)
        if check.shape != (2,):
            raise ValueError(f"{self.kind}: state array {CHECK_ARRAY!r} has shape {check.shape}, expected (2,)")
        if not np.all(np.isfinite(check)):
            raise ValueError(f"{self.kind}: state array {CHECK_ARRAY!r} holds NaN or inf")
        try:
            raw = np.asarray(arrays[MODEL_ARRAY], dtype=float)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.kind}: state array {MODEL_ARRAY!r} is not numeric: {exc}") from None
        if raw.ndim != 1 or raw.size == 0:
            raise ValueError(f"{self.kind}: state array {MODEL_ARRAY!r} has shape {raw.shape}, expected (bytes,)")
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"{self.kind}: state array {MODEL_ARRAY!r} holds NaN or inf")
        if np.any((raw < 0) | (raw > 255) | (raw != np.round(raw))):
            raise ValueError(f"{self.kind}: state array {MODEL_ARRAY!r} is not a byte string")
        data = raw.astype(np.uint8).tobytes()
        if check.tolist() != [float(len(data)), float(zlib.crc32(data))]:
            raise ValueError(f"{self.kind}: the VW model bytes do not match their stored length and CRC-32 "
                             "(truncated or altered)")
        super()._load_arrays(rest)  # validates the per-arm arrays before the model is replaced
        self._load_model(data)
        self._globals[MODEL_ARRAY] = raw.copy()
        self._globals[CHECK_ARRAY] = check.copy()

    def merge(self, other: Learner) -> Learner:
        if other.kind != self.kind or other.dim != self.dim:
            raise ValueError("can only merge learners of the same kind and dimension")
        raise ValueError(f"{self.kind}: Vowpal Wabbit models cannot be merged (their weights are not sufficient "
                         "statistics); learn a VW model in one shard (one worker, single-partition topics)")

    def _count_impression(self, arm: str) -> None:
        r = self.add_arm(arm)
        self._arrays["n"][r] += 1.0
        self._count(impressions=1.0)

    def _count_reward(self, arm: str, reward: float) -> None:
        r = self.add_arm(arm)
        self._arrays["clicks"][r] += reward
        self._count(reward=reward, rewarded=1.0)
