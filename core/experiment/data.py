"""Data sets, built from the config alone: generated ones, scikit-learn's breast cancer set, or a user's CSV.

Everything is numpy here; training turns the arrays into tensors on its device. A bad CSV raises a `ConfigError`
on `csv_path` or `csv_label`, so the command line and the dashboard report it like any other bad field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.experiment.config import ConfigError, ExperimentConfig


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # (n, d) float64
    y_train: np.ndarray  # (n,) float64 of 0.0 / 1.0
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: tuple[str, ...]
    label_names: tuple[str, str]  # what 0 and 1 stand for

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def load_dataset(cfg: ExperimentConfig) -> Dataset:
    rng = np.random.default_rng(cfg.data_seed)
    if cfg.dataset == "csv":
        x, y, names, labels = read_csv(cfg.csv_path, cfg.csv_label)
    elif cfg.dataset == "breast_cancer":
        x, y, names, labels = _breast_cancer()
    else:
        x, y = _generate(cfg, rng)
        x = x * cfg.feature_scale  # raw units: what the first layer sees without `standardize`
        names, labels = tuple(f"x{i}" for i in range(x.shape[1])), ("0", "1")
    x_tr, y_tr, x_va, y_va = _split(x, y, cfg.val_fraction, rng)
    if cfg.standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
    return Dataset(x_tr, y_tr, x_va, y_va, names, labels)


def _labels(n: int, pos_fraction: float, rng: np.random.Generator) -> np.ndarray:
    n_pos = int(round(n * pos_fraction))
    y = np.zeros(n)
    y[:n_pos] = 1.0
    return rng.permutation(y)


def _generate(cfg: ExperimentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = cfg.n_samples
    y = _labels(n, cfg.pos_fraction, rng)
    if cfg.dataset == "random":
        # The article's data: standard-normal inputs, labels independent of them. Nothing to learn.
        return rng.standard_normal((n, cfg.n_features)), y
    if cfg.dataset == "gaussian":
        # Two unit-variance clouds along a random direction, 4 standard deviations apart: linearly separable
        # except for `noise`, the share of labels flipped afterwards.
        direction = rng.standard_normal(cfg.n_features)
        direction /= np.linalg.norm(direction)
        x = rng.standard_normal((n, cfg.n_features)) + np.outer(2.0 * (2 * y - 1), direction)
        flip = rng.random(n) < cfg.noise
        return x, np.where(flip, 1.0 - y, y)
    if cfg.dataset == "moons":
        t = rng.uniform(0, np.pi, n)
        upper = np.stack([np.cos(t), np.sin(t)], axis=1)
        lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
        x = np.where(y[:, None] == 1, lower, upper)
    elif cfg.dataset == "circles":
        t = rng.uniform(0, 2 * np.pi, n)
        radius = np.where(y == 1, 0.5, 1.0)
        x = radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    else:  # xor: the label is the sign of x0 * x1
        x = rng.uniform(-1, 1, (n, 2))
        x = np.abs(x) * np.where(y[:, None] == 1, [[1, 1]], [[1, -1]]) * rng.choice([-1, 1], (n, 1))
    return x + cfg.noise * rng.standard_normal(x.shape), y


def _breast_cancer() -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, str]]:
    from sklearn.datasets import load_breast_cancer  # ships inside scikit-learn: no download

    bunch = load_breast_cancer()
    return (bunch.data.astype(np.float64), bunch.target.astype(np.float64), tuple(bunch.feature_names),
            (str(bunch.target_names[0]), str(bunch.target_names[1])))


def _split(x: np.ndarray, y: np.ndarray, val_fraction: float, rng: np.random.Generator):
    n = len(y)
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n - n_val < 2:
        raise ConfigError("val_fraction", f"leaves {n - n_val} training and {n_val} validation samples of {n}; "
                                          "each side needs samples")
    order = rng.permutation(n)
    val, train = order[:n_val], order[n_val:]
    return x[train], y[train], x[val], y[val]


def read_csv(path: str | Path, label: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, str]]:
    """Read a CSV with a header row: numeric feature columns and a label column with exactly two values."""
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        raise ConfigError("csv_path", f"{str(p)!r} is a folder; give a CSV file")
    if not p.is_file():
        raise ConfigError("csv_path", f"no such file: {str(p)!r}")
    try:
        frame = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise ConfigError("csv_path", f"{p.name} is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError("csv_path", f"{p.name} is not a readable CSV file ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise ConfigError("csv_path", f"{p.name} has a header but no data rows")
    if label not in frame.columns:
        raise ConfigError("csv_label",
                          f"column {label!r} is not in {p.name}; columns: {', '.join(map(str, frame.columns))}")
    features = [c for c in frame.columns if c != label]
    if not features:
        raise ConfigError("csv_path", f"{p.name} has no feature columns besides the label {label!r}")
    values = frame[label]
    if values.isna().any():
        raise ConfigError("csv_label", f"column {label!r} has {int(values.isna().sum())} missing values")
    classes = sorted(values.unique().tolist(), key=str)
    if len(classes) != 2:
        shown = ", ".join(map(str, classes[:5])) + (" ..." if len(classes) > 5 else "")
        raise ConfigError("csv_label", f"column {label!r} must hold exactly two classes, found {len(classes)}: {shown}")
    for col in features:
        numeric = pd.to_numeric(frame[col], errors="coerce")
        bad = numeric.isna() & frame[col].notna()
        if bad.any():
            raise ConfigError("csv_path", f"column {col!r} is not numeric (row {int(bad.idxmax()) + 2}: "
                                          f"{frame[col][bad.idxmax()]!r})")
        if numeric.isna().any():
            raise ConfigError("csv_path",
                              f"column {col!r} has missing values (NaN) in row {int(numeric.isna().idxmax()) + 2}")
        if not np.isfinite(numeric.to_numpy(dtype=float)).all():
            raise ConfigError("csv_path", f"column {col!r} has infinite values")
        frame[col] = numeric
    # 0/1, False/True and "no"/"yes"-like pairs: the second in sorted order is the positive class.
    if set(classes) <= {0, 1}:
        classes = [0, 1]
    y = (values == classes[1]).to_numpy(dtype=np.float64)
    return frame[features].to_numpy(dtype=np.float64), y, tuple(map(str, features)), (str(classes[0]), str(classes[1]))
