"""How good a run's validation logits are as scores, measured at each epoch's end on the host: the ROC AUC
(`val_auc`), the expected calibration error (`val_ece`) and the reliability curve (`calibration` in the summary),
each for many rows of logits at once (a population's members, a window's epochs) in one vectorised pass.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


# Rows a pass works on at once (a population's window: members x epochs of them). Each array a pass makes is then
# under a megabyte for a few hundred samples: it stays in cache, and the allocator reuses its memory instead of
# mapping fresh pages (a fresh 6 MB array costs about as much in page faults as the arithmetic done on it).
BLOCK_ROWS = 1024


def _blockwise(fn: Callable[..., np.ndarray], rows: np.ndarray, labels: np.ndarray, **kwargs: Any) -> np.ndarray:
    """fn(rows, labels) of rows computed independently, on blocks of BLOCK_ROWS rows."""
    rows = np.asarray(rows)
    if len(rows) <= BLOCK_ROWS:
        return fn(rows, labels, **kwargs)
    return np.concatenate([fn(rows[i:i + BLOCK_ROWS], labels, **kwargs) for i in range(0, len(rows), BLOCK_ROWS)])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative, ties counted
    half (the Mann-Whitney statistic). NaN with one class or a non-finite score."""
    return float(roc_auc_rows(np.asarray(scores)[None, :], labels)[0])


def roc_auc_rows(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`roc_auc` of every row of `scores` (rows, n) against the same `labels` (n,): `_roc_auc_block` on blocks of
    BLOCK_ROWS rows."""
    return _blockwise(_roc_auc_block, scores, labels)


def _roc_auc_block(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`roc_auc` of every row of `scores` (rows, n) against the same `labels` (n,), in one pass: U = the
    positives' rank sum - P(P+1)/2 and AUC = U / (P N). Float32 rows (a float32 or half-precision run's logits)
    sort as integers with the label in the lowest bit (`_untied_rank_sums`); the rows with a tie among their
    scores, and float64 rows, take average ranks (`_ranked_rank_sums`). U is a sum of half-integers, exact in
    float64, so either equals counting the pairs."""
    scores = np.asarray(scores)
    positive = np.asarray(labels) > 0.5
    rows, n = scores.shape
    n_pos = int(positive.sum())
    n_neg = n - n_pos
    if rows == 0 or n_pos == 0 or n_neg == 0:
        return np.full(rows, math.nan)
    if scores.dtype in (np.float32, np.float16):
        rank_sum, tied = _untied_rank_sums(scores.astype(np.float32, copy=False), positive)
        if tied.any():
            rank_sum[tied] = _ranked_rank_sums(scores[tied].astype(np.float64), positive)
    else:
        rank_sum = _ranked_rank_sums(np.asarray(scores, dtype=np.float64), positive)
    auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    auc[~np.isfinite(scores).all(axis=1)] = math.nan
    return auc


def _untied_rank_sums(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each float32 row's positives' rank sum where its scores are all distinct, and which rows have a tie (theirs
    is left to `_ranked_rank_sums`). A float's bits, its magnitude flipped when negative, order as the floats do
    (-0 made +0 first); shifted up one with the label below, one integer sort of a row puts every sample at its
    rank: a quarter of the time of an argsort and a gather."""
    rows, n = scores.shape
    bits = (scores + np.float32(0)).view(np.int32)  # + 0: -0.0 becomes +0.0, which it equals
    bits ^= (bits >> 31) & 0x7FFFFFFF
    key = bits.astype(np.int64)
    key <<= 1
    key |= positive
    key.sort(axis=1)
    score = key >> 1
    tied = (score[:, 1:] == score[:, :-1]).any(axis=1)
    key &= 1  # the label at each rank
    return (key @ np.arange(1, n + 1)).astype(np.float64), tied


def _ranked_rank_sums(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Each row's positives' rank sum from its average ranks (ties share theirs)."""
    rows, n = scores.shape
    order = np.argsort(scores, axis=1)
    ranked = np.take_along_axis(scores, order, axis=1)
    starts = np.ones((rows, n), dtype=bool)  # where a run of equal scores starts; runs never cross rows
    starts[:, 1:] = ranked[:, 1:] != ranked[:, :-1]
    rank = np.broadcast_to(np.arange(1, n + 1, dtype=np.float64), (rows, n))
    if starts.all():
        average = rank
    else:
        group = np.cumsum(starts.ravel()) - 1
        average = (np.bincount(group, weights=rank.ravel()) / np.bincount(group))[group].reshape(rows, n)
    return (average * positive[order]).sum(axis=1)


CALIBRATION_BINS = 10


def _probabilities(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) in float64, one array worked in place (each fresh one is page faults: half of the time)."""
    p = np.clip(np.asarray(z, dtype=np.float64), -60.0, 60.0)
    np.negative(p, out=p)
    np.exp(p, out=p)
    p += 1.0
    return np.reciprocal(p, out=p)


def _binned(z: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of logits z (rows, n) in float64 as (which rows are all finite, each probability (a non-finite logit's
    as if 0), each probability's bin of `bins` equal-width ones numbered across rows (row r's are
    r * bins + 0..bins-1), for one `bincount` of every row)."""
    finite = np.isfinite(z).all(axis=1)
    p = _probabilities(z if finite.all() else np.where(np.isfinite(z), z, 0.0))
    scaled = p * bins
    np.minimum(scaled, bins - 1, out=scaled)  # 1.0 goes in the last bin
    which = scaled.astype(np.int64)
    which += bins * np.arange(len(p))[:, None]
    return finite, p, which


def ece_rows(z: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Expected calibration error of every row of logits `z` (rows, n) against `labels` (n,): over equal-width
    probability bins, the share of samples in the bin times |mean predicted probability - share of positives|.
    NaN for a row with a non-finite logit. On blocks of BLOCK_ROWS rows."""
    return _blockwise(_ece_block, z, labels, bins=bins)


def _ece_block(z: np.ndarray, labels: np.ndarray, *, bins: int) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    rows, n = z.shape
    if rows == 0 or n == 0:
        return np.full(rows, math.nan)
    finite, p, which = _binned(z, bins)
    total_p = np.bincount(which.ravel(), weights=p.ravel(), minlength=rows * bins).reshape(rows, bins)
    total_y = np.bincount(which.ravel(), weights=np.broadcast_to(labels, z.shape).ravel(),
                          minlength=rows * bins).reshape(rows, bins)
    ece = np.abs(total_p - total_y).sum(axis=1) / n  # sum over bins of n_b/n * |mean p - mean y|
    ece[~finite] = math.nan
    return ece


def reliability(z: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS) -> dict[str, list[float]]:
    """The reliability curve of one set of logits: per non-empty bin, the mean predicted probability, the share
    of positives and the number of samples."""
    return reliability_rows(np.asarray(z)[None], labels, bins=bins)[0]


def reliability_rows(z: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS
                     ) -> list[dict[str, list[float]]]:
    """`reliability` of every row of logits `z` (rows, n) against the same `labels` (n,), binned in one pass (each
    bin's sums added in sample order, as one row's own would be)."""
    z = np.asarray(z, dtype=np.float64)
    rows, n = z.shape
    empty = {"predicted": [], "observed": [], "count": []}
    if n == 0:
        return [dict(empty) for _ in range(rows)]
    finite, p, which = _binned(z, bins)
    count = np.bincount(which.ravel(), minlength=rows * bins).reshape(rows, bins)
    mean_p = np.bincount(which.ravel(), weights=p.ravel(), minlength=rows * bins).reshape(rows, bins)
    mean_y = np.bincount(which.ravel(), weights=np.broadcast_to(np.asarray(labels, dtype=np.float64), z.shape)
                         .ravel(), minlength=rows * bins).reshape(rows, bins)
    with np.errstate(invalid="ignore"):  # an empty bin's 0 / 0, left out below
        predicted, observed = (mean_p / count).tolist(), (mean_y / count).tolist()
    out = []
    for r, (counts, pred, obs) in enumerate(zip(count.tolist(), predicted, observed)):
        out.append({"predicted": [v for v, c in zip(pred, counts) if c],
                    "observed": [v for v, c in zip(obs, counts) if c],
                    "count": [c for c in counts if c]} if finite[r] else dict(empty))
    return out
