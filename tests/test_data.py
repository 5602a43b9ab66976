import numpy as np
import pytest

from core.experiment.config import ConfigError, ExperimentConfig
from core.experiment.data import load_dataset


@pytest.mark.parametrize("dataset, width", [("gaussian", 10), ("moons", 2), ("circles", 2), ("xor", 2),
                                            ("random", 10), ("breast_cancer", 30)])
def test_shapes_and_split(dataset, width):
    cfg = ExperimentConfig(dataset=dataset, n_samples=500, val_fraction=0.2)
    data = load_dataset(cfg)
    assert data.n_features == width
    if dataset != "breast_cancer":
        assert len(data.y_train) == 400 and len(data.y_val) == 100
    assert set(np.unique(data.y_train)) <= {0.0, 1.0}
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-9)  # standardised on the training split


def test_same_seed_same_data_and_imbalance():
    cfg = ExperimentConfig(n_samples=1000, pos_fraction=0.1, noise=0.0)
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert np.array_equal(a.x_train, b.x_train)
    y = np.concatenate([a.y_train, a.y_val])
    assert y.mean() == pytest.approx(0.1)


def test_xor_labels_follow_the_sign_product():
    data = load_dataset(ExperimentConfig(dataset="xor", noise=0.0, standardize=False))
    assert np.array_equal(data.x_train[:, 0] * data.x_train[:, 1] > 0, data.y_train == 1)


def test_gaussian_noise_flips_labels():
    clean = load_dataset(ExperimentConfig(noise=0.0, n_samples=2000))
    noisy = load_dataset(ExperimentConfig(noise=0.3, n_samples=2000))
    # The clean set is separable along one direction: a least-squares line gets nearly everything right.
    def lsq_acc(d):
        w = np.linalg.lstsq(np.c_[d.x_train, np.ones(len(d.y_train))], d.y_train * 2 - 1, rcond=None)[0]
        return np.mean((np.c_[d.x_train, np.ones(len(d.y_train))] @ w > 0) == (d.y_train == 1))
    assert lsq_acc(clean) > 0.97 and lsq_acc(noisy) < 0.8


def write(tmp_path, text):
    p = tmp_path / "data.csv"
    p.write_text(text)
    return str(p)


def test_csv_reads_features_and_two_classes(tmp_path):
    path = write(tmp_path, "a,b,label\n1,2,yes\n3,4,no\n5,6,yes\n7,8,no\n9,1,yes\n")
    data = load_dataset(ExperimentConfig(dataset="csv", csv_path=path, val_fraction=0.4, standardize=False))
    assert data.feature_names == ("a", "b") and data.label_names == ("no", "yes")
    assert len(data.y_train) == 3 and len(data.y_val) == 2


@pytest.mark.parametrize("text, field, message", [
    (None, "csv_path", "no such file"),
    ("", "csv_path", "is empty"),
    ("a,label\n", "csv_path", "no data rows"),
    ("a,label\nx,1\ny,0\n", "csv_path", "column 'a' is not numeric"),
    ("a,label\n1,1\n,0\n2,1\n", "csv_path", "missing values"),
    ("a,label\n1,1\n2,0\n3,2\n", "csv_label", "exactly two classes, found 3"),
    ("a,target\n1,1\n2,0\n", "csv_label", "column 'label' is not in"),
])
def test_bad_csv(tmp_path, text, field, message):
    path = str(tmp_path / "missing.csv") if text is None else write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_dataset(ExperimentConfig(dataset="csv", csv_path=path))
    assert info.value.field == field
