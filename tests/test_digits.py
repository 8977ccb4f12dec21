"""sgdsde.data.digits: scikit-learn's bundled digits, split by a key, with label flips."""

import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits  # the test extra installs scikit-learn: never skipped

import sgdsde as sd


@pytest.fixture(scope="module")
def raw():
    d = load_digits()
    return d.data / 16.0, d.target


def test_split_is_a_shuffled_partition_of_the_bundled_set(raw):
    """Counts (899, 449, 449) = 1,797: the three sets together hold every image once with its own label;
    features in [0, 1] (intensity / 16), labels 0–9; the same key gives the same split, another key another
    one; fractions are rounded down."""
    X_raw, y_raw = raw
    d = sd.data.digits(3, split=(899, 449, 449), dtype=np.float64)
    X = np.concatenate([d.X, d.X_val, d.X_test])
    y = np.concatenate([d.y, d.y_val, d.y_test])
    assert X.min() == 0.0 and X.max() == 1.0 and set(np.unique(y)) == set(range(10))
    # each image once (the bundled set's rows are not all distinct: compare the multisets of (row, label))
    assert sorted(map(bytes, np.c_[X, y])) == sorted(map(bytes, np.c_[X_raw, y_raw]))
    again = sd.data.digits(3, split=(899, 449, 449), dtype=np.float64)
    np.testing.assert_array_equal(again.X_test, d.X_test)
    other = sd.data.digits(4, split=(0.5, 0.25, 0.25), dtype=np.float64)
    assert other.X.shape == (898, 64) and other.X_val.shape == (449, 64) and other.X_test.shape == (449, 64)
    assert not np.array_equal(other.X[:10], d.X[:10])
    counts = sd.data.digits(split=(100, 50, 0))
    assert counts.X.shape == (100, 64) and counts.X_val.shape == (50, 64) and counts.X_test.shape == (0, 64)
    assert np.array_equal(
        np.asarray(counts.X), np.asarray(sd.data.digits(0, split=(100, 50, 0)).X)
    )  # None = seed 0


def test_flips_change_exactly_the_marked_fraction():
    """40 % of the training labels are flipped (round(0.4 n) exactly), each to another class; validation labels
    flip only with flip_validation; test labels never."""
    d = sd.data.digits(5, flip_fraction=0.4)
    y, yc, m = np.asarray(d.y), np.asarray(d.y_clean), np.asarray(d.flipped)
    assert m.sum() == round(0.4 * len(y))
    assert np.all((y != yc) == m)
    assert (
        np.array_equal(np.asarray(d.y_val), np.asarray(d.y_val_clean)) and not np.asarray(d.flipped_val).any()
    )
    dv = sd.data.digits(5, flip_fraction=0.4, flip_validation=True)
    mv = np.asarray(dv.flipped_val)
    assert mv.sum() == round(0.4 * len(mv))
    assert np.all((np.asarray(dv.y_val) != np.asarray(dv.y_val_clean)) == mv)
    np.testing.assert_array_equal(dv.y, d.y)  # the training flips do not depend on flip_validation
    # a digits problem: the classes fit CrossEntropyLoss on a 10-output model
    net = sd.TwoLayerNetwork(64, 2, "relu", n_outputs=d.n_classes)
    sd.Problem(net, d.X, d.y, loss=sd.CrossEntropyLoss())


def test_bad_input_names_the_argument(monkeypatch):
    for kwargs, match in (
        ({"split": (0.5, 0.5)}, "split"),
        ({"split": (0.7, 0.3, 0.2)}, "split"),
        ({"split": (1000, 500, 500)}, "split"),
        ({"split": (0, 10, 10)}, "split"),
        ({"split": "abc"}, "split"),
        ({"flip_fraction": 1.5}, "flip_fraction"),
        ({"flip_fraction": -0.1}, "flip_fraction"),
        ({"flip_validation": "yes"}, "flip_validation"),
        ({"dtype": np.int32}, "dtype"),
        ({"key": "seed"}, "key"),
    ):
        with pytest.raises(ValueError, match=match):
            sd.data.digits(**kwargs)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"sgdsde\[data\]"):
        sd.data.digits()
