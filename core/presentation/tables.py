"""Tables for papers: a study's ranking, effects and interactions as Markdown or LaTeX (mean ± 95% CI, n seeds).

Every number is the mean over seeds ± the half-width of its 95% t interval (the intervals are symmetric), to 4
significant digits. The ranking is by the judged metric; effects and interactions carry the Holm-adjusted p over
all of them (`core.analysis.statistics`). The Studies page's download buttons and `python -m core export --format
table --study NAME --table-format markdown|latex` write the same text (`study_tables`).

Markdown: GitHub's pipe tables, a `###` heading over each, `|` in a cell escaped. LaTeX: one `tabular` per table
(plain `\\hline` rules, no package needed) after a `%` comment naming it, the cells escaped (& % $ # _ { } ~ ^ \\).
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import pandas as pd

from core.analysis.effects import choice_words, factor_columns, format_value, ranking
from core.analysis.statistics import StudyStatistics
from core.jobs.studies import find_study, judged_statistics
from core.store import Store

TABLE_FORMATS: tuple[str, ...] = ("markdown", "latex")
EXTENSIONS = {"markdown": "md", "latex": "tex"}
MIME_TYPES = {"markdown": "text/markdown", "latex": "application/x-tex"}
PM = "±"


def number(x: Any) -> str:
    """4 significant digits, thousands separated from 10,000 on; "–" for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:,.0f}" if abs(x) >= 10_000 else f"{x:.4g}"


def mean_ci(mean: float, low: float, high: float) -> str:
    """"0.1543 ± 0.0212": the mean ± the half-width of its interval; the mean alone without one."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return number(mean)
    return f"{number(mean)} {PM} {number((high - low) / 2)}"


def ranking_table(ranking: pd.DataFrame, factors: Sequence[str], metric: str, label: str) -> pd.DataFrame:
    """`core.analysis.effects.ranking(frame, metric=...)` as a paper table: rank, the varied values, n seeds and
    the judged metric as mean ± 95% CI."""
    rows = []
    for row in ranking.to_dict("records"):
        rows.append({"rank": str(row["rank"]), **{f: format_value(row[f]) for f in factors}, "n seeds": str(row["n"]),
                     f"{label} (mean {PM} 95% CI)": mean_ci(row[f"{metric}_mean"], row[f"{metric}_ci_low"],
                                                           row[f"{metric}_ci_high"])})
    return pd.DataFrame(rows, columns=["rank", *factors, "n seeds", f"{label} (mean {PM} 95% CI)"])


def effects_table(effects: pd.DataFrame, label: str) -> pd.DataFrame:
    """Main effects: the change, the difference in the judged metric as mean ± 95% CI, Holm's p, n seeds."""
    head = f"difference in {label} (mean {PM} 95% CI)"
    rows = [{"change": choice_words(r["factor"], r["level"], r["baseline"]),
             head: mean_ci(r["difference"], r["ci_low"], r["ci_high"]), "p (Holm)": _p(r.get("p_holm")),
             "n seeds": str(r["n_seeds"])} for r in effects.to_dict("records")]
    return pd.DataFrame(rows, columns=["change", head, "p (Holm)", "n seeds"])


def interactions_table(interactions: pd.DataFrame, label: str) -> pd.DataFrame:
    """Interactions: the two changes, the interaction contrast as mean ± 95% CI, Holm's p, n seeds."""
    head = f"interaction on {label} (mean {PM} 95% CI)"
    rows = []
    for r in interactions.to_dict("records"):
        (a, b), (la, lb), (a0, b0) = r["fields"], r["levels"], r["baselines"]
        rows.append({"changes": f"{choice_words(a, la, a0)} × {choice_words(b, lb, b0)}",
                     head: mean_ci(r["estimate"], r["ci_low"], r["ci_high"]), "p (Holm)": _p(r.get("p_holm")),
                     "n seeds": str(r["n_seeds"])})
    return pd.DataFrame(rows, columns=["changes", head, "p (Holm)", "n seeds"])


def markdown(table: pd.DataFrame) -> str:
    """A pipe table: header, separator (numbers' columns right-aligned), one line per row."""
    def cell(x: Any) -> str:
        return str(x).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    align = ["---:" if _numeric(table[c]) else ":---" for c in table.columns]
    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in table.itertuples(index=False, name=None)]
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame) -> str:
    """A `tabular` with `\\hline` rules; ± as `$\\pm$`, the rest escaped."""
    spec = "".join("r" if _numeric(table[c]) else "l" for c in table.columns)
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\hline",
             " & ".join(latex_escape(str(c)) for c in table.columns) + " \\\\", "\\hline"]
    for row in table.itertuples(index=False, name=None):
        lines.append(" & ".join(latex_escape(str(x)) for x in row) + " \\\\")
    lines += ["\\hline", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


_LATEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
          "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", PM: "$\\pm$", "×": "$\\times$",
          "–": "--", "∞": "$\\infty$", "<": "$<$", ">": "$>$"}  # < and > in text mode print as ¡ and ¿
_MINUS = "\x00"  # a number's sign, set as math's minus, not a hyphen


def latex_escape(text: str) -> str:
    text = re.sub(r"(?<![\w.])-(?=[\d.∞])", _MINUS, text)
    return "".join(_LATEX.get(ch, ch) for ch in text).replace(_MINUS, "$-$")


def study_tables(name: str, ranking: pd.DataFrame, factors: Sequence[str], stats: StudyStatistics,
                 table_format: str) -> str:
    """The ranking, effects and interactions of a study in one text, as `table_format` (markdown or latex)."""
    if table_format not in TABLE_FORMATS:
        raise ValueError(f"table format must be one of {', '.join(TABLE_FORMATS)}; got {table_format!r}")
    judge = stats.judge
    parts = [("Ranking", ranking_table(ranking, factors, judge.column, judge.label)),
             ("Effects", effects_table(stats.effects, judge.label)),
             ("Interactions", interactions_table(stats.interactions, judge.label))]
    note = (f"{name}: judged on {judge.label} ({judge.column}); mean {PM} half-width of the 95% t interval over "
            f"seeds; p-values Holm-corrected across the {stats.family} effects and interactions with a p-value.")
    if table_format == "markdown":
        return f"{_md_text(note)}\n\n" + "\n".join(f"### {title}\n\n{markdown(table)}" for title, table in parts)
    return f"% {note}\n" + "\n".join(f"% {title}\n{latex(table)}" for title, table in parts)


def _md_text(text: str) -> str:
    return "".join("\\" + ch if ch in "\\`*_[]<>#|" else ch for ch in text)


def _p(p: Any) -> str:
    if p is None or not math.isfinite(float(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _numeric(column: pd.Series) -> bool:
    """A column of numbers as text (right-aligned): every cell starts like a number, or is a dash."""
    cells = [str(x) for x in column]
    return bool(cells) and all(c == "–" or c[:1].isdigit() or c[:1] in "-<∞" for c in cells)


def stored_study_tables(store: Store, study: str, *, judge: str | None = None,
                        table_format: str = "markdown") -> tuple[str, str]:
    """(study name, tables text) of the stored study named `study` (or with that id): what `export --format table`
    writes. A ValueError names what is wrong (no such study, a bad judge or format)."""
    found = find_study(store, study)
    if found is None:
        names = ", ".join(s.name for s in store.list_studies()) or "none yet"
        raise ValueError(f"no stored study is named {study!r} (stored: {names})")
    frame, stats = judged_statistics(store, found.id, judge)
    factors = factor_columns(frame)
    return found.name, study_tables(found.name, ranking(frame, metric=stats.judge.column), factors, stats,
                                    table_format)
