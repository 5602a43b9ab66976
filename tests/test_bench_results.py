"""benchmarks/bench.py's RESULTS.md writer: a run of some sections (`--only`) replaces those sections' rows and
keeps every other row, the notes under the table and the other benchmarks' sections."""

from __future__ import annotations

from pathlib import Path

from benchmarks.bench import Row, write_results

OLD = """# Benchmark results

Machine: old.

| section | case | ours | baseline | ratio | quartiles | fastest | budget | met |
|---|---|---|---|---|---|---|---|---|
| training (cpu) | a | 1.0000 s | 1.0000 s | 1.000 | - | - | <= 1.15x | yes |
| training (cpu) | b | 1.0000 s | 1.0000 s | 1.000 | - | - | <= 1.15x | yes |
| store read | c | 2.0000 s | 1.0000 s | 2.000 | - | - | <= 3x the floor | yes |
| dashboard | d | 0.1000 s | 0.2000 s | 0.500 | - | - | <= 0.2 s | yes |

The store rows are from an earlier run.

## Population training

| case | ours |
"""


def test_a_partial_run_replaces_its_sections_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "RESULTS.md"
    path.write_text(OLD)
    write_results([Row("training (cpu)", "new", 3.0, 1.0, "s", "<= 1.15x", False, (3.0, 2.9, 3.1), 2.8),
                   Row("scale", "e", 1.0, 4.0, "s", "-", None)], path, repeats=7, training_repeats=30)
    lines = path.read_text().splitlines()
    rows = [line.split(" | ")[1] for line in lines if line.startswith("| ") and not line.startswith("| section")
            and " | " in line and not line.startswith("| case")]
    assert rows == ["new", "c", "d", "e"]  # training's two rows became the new one, in their place; new sections last
    assert "| training (cpu) | new | 3.0000 s | 1.0000 s | 3.000 | 2.90-3.10 | 2.800 | <= 1.15x | no |" in lines
    assert "The store rows are from an earlier run." in lines and "## Population training" in lines
    assert lines.index("The store rows are from an earlier run.") < lines.index("## Population training")
    assert sum(line.startswith("|---|") for line in lines) == 1


def test_a_partial_population_run_keeps_the_other_parts_rows(tmp_path: Path) -> None:
    from benchmarks.population import section, write_section

    def row(case: str, ratio: float) -> dict:
        return dict(case=case, ours=ratio, base=1.0, paired=(ratio, ratio, ratio), fastest=ratio, budget="-", met=None)

    study = "200-cell study: `python -m core study` vs one cell's `python -m core train`"
    full = "200 members, diagnostics=full: train_population vs a bare batched loop"
    loss = "200 members, diagnostics=loss: train_population vs a bare batched loop"
    sizes = "population of 10: throughput vs 10 sequential `trainer.train` runs"
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\n## Other\n\nkept\n")
    write_section(section([row(study, 1.5), row(full, 1.6), row(loss, 1.1), row(sizes, 4.0)], repeats=6,
                          quick=False), path)
    path.write_text(path.read_text().replace("| 4.00 | - | - |\n", "| 4.00 | - | - |\n\nA note on these rows.\n"))
    write_section(section([row(full, 1.2)], repeats=2, quick=False), path)  # `--only overhead`, loss left out
    text = path.read_text()
    cases = [line.split(" | ")[0][2:] for line in text.splitlines() if line.startswith("| ") and "|---" not in line
             and not line.startswith("| case")]
    assert cases == [study, full, sizes]  # the overhead part is this run's; the others' rows stay, in order
    assert "| 1.20 |" in text and "| 1.60 |" not in text and "A note on these rows." in text
    assert text.count("## Population training") == 1 and "## Other\n\nkept" in text
    write_section(section([row(study, 1.4), row(full, 1.3), row(sizes, 5.0)], repeats=6, quick=False), path)
    assert "A note on these rows." not in path.read_text()  # a run of every part replaces the notes too


def test_the_dispatch_counts_are_a_part_of_their_own(tmp_path: Path) -> None:
    """The operations-a-step rows (`--only dispatch`) say "a bare batched loop" too, but are their own part: a run
    of the timed overhead keeps them, a run of them keeps the timed rows; their unit is operations."""
    from benchmarks.population import section, write_section

    def row(case: str, ratio: float, **unit: str) -> dict:
        return dict(case=case, ours=ratio * 100, base=100.0, paired=(ratio,) * 3, fastest=ratio, budget="-",
                    met=None, **unit)

    ops = "20 members, diagnostics=full: operations dispatched a step by train_population vs a bare batched loop"
    full = "200 members, diagnostics=full: train_population vs a bare batched loop"
    path = tmp_path / "RESULTS.md"
    write_section(section([row(ops, 1.4, unit="ops"), row(full, 1.5)], repeats=6, quick=False), path)
    assert "| 140.00 ops | 100.00 ops | 1.40 |" in path.read_text() and "| 150.00 s | 100.00 s |" in path.read_text()
    write_section(section([row(full, 1.3)], repeats=6, quick=False), path)  # `--only overhead`
    text = path.read_text()
    assert "| 140.00 ops |" in text and "| 130.00 s |" in text and "| 150.00 s |" not in text
    write_section(section([row(ops, 1.2, unit="ops")], repeats=6, quick=False), path)  # `--only dispatch`
    text = path.read_text()
    assert "| 120.00 ops |" in text and "| 140.00 ops |" not in text and "| 130.00 s |" in text
