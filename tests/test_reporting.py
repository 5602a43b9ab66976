import math

from core.training.reporting import MemoryReporter, MetricBatch, MetricRow


def test_a_batch_holds_rows_in_columns_and_gives_them_back_in_order():
    batch = MetricBatch()
    batch.add_series("train_loss", [1, 2, 3], [0, 0, 1], [0.7, math.nan, math.inf], [0.1, 0.2, 0.3])
    batch.add("val_loss", 3, 1, 0.5, 0.35)
    assert len(batch) == 4
    assert batch.keys == ["train_loss"] * 3 + ["val_loss"]
    rows = list(batch)
    assert all(type(r) is MetricRow for r in rows)
    assert rows[0] == MetricRow("train_loss", 1, 0, 0.7, 0.1)
    assert rows[3] == MetricRow("val_loss", 3, 1, 0.5, 0.35)
    assert math.isnan(rows[1].value) and rows[2].value == math.inf
    assert list(MetricBatch.from_rows(rows))[2:] == rows[2:]
    assert len(MetricBatch.from_rows([])) == 0


def test_memory_reporter_keeps_every_batch():
    rep = MemoryReporter()
    first = MetricBatch.from_rows([MetricRow("a", 1, 0, 1.0, 0.0), MetricRow("b", 1, 0, 2.0, 0.0)])
    rep.on_metrics(first, step=1)
    rep.on_metrics(MetricBatch.from_rows([MetricRow("a", 2, 0, 3.0, 0.1)]), step=2)
    assert rep.flushes == 2
    assert rep.series("a") == [1.0, 3.0] and rep.keys() == {"a", "b"}
    assert [r.step for r in rep.rows] == [1, 1, 2]


def test_add_columns_is_add_series_of_each_column():
    steps, epochs, walls = [1, 2, 3], [0, 0, 1], [0.1, 0.2, 0.3]
    columns = {"train_loss": [0.7, math.nan, math.inf], "grad_norm": [1.0, 2.0, 3.0], "lr": [0.1] * 3}
    bulk, each = MetricBatch(), MetricBatch()
    bulk.add("first", 0, 0, 9.0, 0.0)
    each.add("first", 0, 0, 9.0, 0.0)
    bulk.add_columns(columns, steps, epochs, walls)
    for key, col in columns.items():
        each.add_series(key, steps, epochs, col, walls)
    bulk.check()
    assert [tuple(map(str, r)) for r in bulk] == [tuple(map(str, r)) for r in each]  # str: NaN equals NaN
    assert len(bulk) == 10 and bulk.keys[1:4] == ["train_loss"] * 3 and bulk.steps[4:7] == steps
    bulk.add_columns({}, steps, epochs, walls)
    assert len(bulk) == 10


def test_a_block_reads_as_its_rows_in_the_order_they_were_added():
    import pickle

    import numpy as np
    import pytest

    batch, lists = MetricBatch(), MetricBatch()
    for b in (batch, lists):
        b.add("first", 0, 0, 9.0, 0.0)
    batch.add_block(["loss", "grad_norm"], np.array([[0.5, math.nan], [2.0, math.inf]]), [1, 2], [0, 0], [0.1, 0.2])
    lists.add_columns({"loss": [0.5, math.nan], "grad_norm": [2.0, math.inf]}, [1, 2], [0, 0], [0.1, 0.2])
    assert len(batch) == 5 and len(batch.parts()[1]) == 1  # held as arrays until the lists are read
    batch.add("val_loss", 2, 0, 0.25, 0.3)  # after the block: settles it first
    lists.add("val_loss", 2, 0, 0.25, 0.3)
    assert batch.parts()[1] == [] and len(batch) == 6
    assert [tuple(map(str, r)) for r in batch] == [tuple(map(str, r)) for r in lists]
    assert all(type(v) is float for v in batch.values) and all(type(s) is int for s in batch.steps)
    batch.add_block(["x"], [[1.0]], [3], [1], [0.4])
    again = pickle.loads(pickle.dumps(batch))
    assert again.keys == batch.keys == ["first", "loss", "loss", "grad_norm", "grad_norm", "val_loss", "x"]
    assert str(again.values) == str(batch.values) and again.steps == [0, 1, 2, 1, 2, 2, 3]
    batch.add_block([], np.empty((0, 2)), [1, 2], [0, 0], [0.0, 0.0])  # nothing to add
    batch.add_block(["y"], np.empty((1, 0)), [], [], [])
    assert len(batch) == 7
    with pytest.raises(ValueError, match=r"\(keys, steps\) = \(2, 2\)"):
        batch.add_block(["a", "b"], np.zeros((2, 3)), [1, 2], [0, 0], [0.0, 0.0])
    assert len(batch) == 7
