import subprocess
import sys

import numpy as np
import pytest

from banditloop.core.features import FeatureSpec, Featurizer


def test_layout_bias_numeric_slots_and_hashing():
    f = Featurizer(FeatureSpec(dim=16, numeric=("x0", "x1")))
    x = f.transform({"x0": 2.0, "x1": -1.0, "country": "fr", "age": 3.0})
    assert x[0] == 1.0 and x[1] == 2.0 and x[2] == -1.0
    hashed = x[3:]
    assert np.count_nonzero(hashed) == 2 and set(np.abs(hashed[hashed != 0])) == {1.0, 3.0}
    # a different string value lands elsewhere (one-hot through hashing) or with another sign
    y = f.transform({"x0": 2.0, "x1": -1.0, "country": "de", "age": 3.0})
    assert not np.array_equal(x, y)


def test_interactions_multiply_values():
    f = Featurizer(FeatureSpec(dim=64, bias=False, interactions=(("a", "b"),)))
    x = f.transform({"a": 2.0, "b": 3.0})
    without = Featurizer(FeatureSpec(dim=64, bias=False)).transform({"a": 2.0, "b": 3.0})
    diff = x - without
    assert np.count_nonzero(diff) == 1 and abs(diff[diff != 0][0]) == 6.0


def test_deterministic_across_processes():
    code = ("from banditloop.core.features import *; import json;"
            "print(json.dumps(Featurizer(FeatureSpec(dim=32)).transform({'u':'abc','v':1.5,'w':'z'}).tolist()))")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")]
    assert out[0] == out[1]
    here = Featurizer(FeatureSpec(dim=32)).transform({"u": "abc", "v": 1.5, "w": "z"}).tolist()
    assert str(here).replace(" ", "") == out[0].strip().replace(" ", "")


def test_spec_round_trip_and_validation():
    spec = FeatureSpec(dim=8, numeric=("a",), interactions=(("a", "b"),), bias=False)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError):
        FeatureSpec(dim=2, numeric=("a", "b", "c"))
