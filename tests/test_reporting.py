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
