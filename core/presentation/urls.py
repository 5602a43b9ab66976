"""What the pages' URLs hold, read and written: `/compare?runs=3,7,12`, `/runs?run=7`, `/studies?study=3`.

Parsing is lenient where a person types (commas or spaces, duplicates dropped) and every bad piece becomes one
sentence saying what is wrong, so a page shows what it could open and why the rest is missing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence




class SelectionError(ValueError):
    """A `?runs=` value that is not a comma-separated list of run ids."""


_ID_HINT = "use run ids separated by commas, e.g. ?runs=3,7,12"
_PIECES = re.compile(r"[,\s]+")  # what separates the ids a person types into a link


def split_run_ids(value: str | Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Lenient parse of `?runs=3,7,12`: the ids in order (duplicates dropped) and one message per bad piece.

    Commas and spaces separate ids; a repeated parameter (a list) counts as one list; blanks are ignored."""
    if value is None:
        return [], []
    text = ",".join(value) if isinstance(value, (list, tuple)) else str(value)
    ids: list[int] = []
    problems: list[str] = []
    for token in _PIECES.split(text.strip()):
        token = token.removeprefix("#")  # "#3", as the pages write a run
        if not token:
            continue
        if token.isascii() and token.isdigit() and int(token) > 0:
            if int(token) not in ids:
                ids.append(int(token))
        else:
            problems.append(f"{token!r} is not a run id: {_ID_HINT}")
    return ids, problems


def parse_run_ids(value: str | Sequence[str] | None) -> list[int]:
    """Strict parse of `?runs=3,7,12`; raises `SelectionError` naming every bad piece."""
    ids, problems = split_run_ids(value)
    if problems:
        raise SelectionError("; ".join(problems))
    return ids


def format_run_ids(ids: Iterable[int]) -> str:
    """The inverse of `parse_run_ids`: '3,7,12'."""
    return ",".join(str(int(i)) for i in dict.fromkeys(ids))


@dataclass(frozen=True)
class Selection:
    ids: tuple[int, ...]  # ids that exist, in the order asked for
    problems: tuple[str, ...]  # one sentence per bad or unknown id


def resolve_selection(value: str | Sequence[str] | None, known_ids: Iterable[int]) -> Selection:
    """`?runs=` checked against the store: bad pieces and ids of runs that do not exist become problems."""
    ids, problems = split_run_ids(value)
    known = set(known_ids)
    missing = [i for i in ids if i not in known]
    if missing:
        listed = ", ".join(f"#{i}" for i in missing)
        problems.append(f"no run {listed}: deleted, or from another database" if len(missing) == 1 else
                        f"no runs {listed}: deleted, or from another database")
    return Selection(tuple(i for i in ids if i in known), tuple(problems))


def pieces(values: Sequence[str]) -> list[str]:
    """A repeated parameter's values (`?run=5&run=6`) or one value's comma- or space-separated pieces
    (`?run=5,6`), distinct and in order: more than one means a link names several."""
    return list(dict.fromkeys(p for v in values for p in _PIECES.split(v.strip()) if p))


def resolve_one(value: str | Sequence[str] | None, known_ids: Iterable[int], *, what: str,
                param: str, named: str | None = None) -> tuple[int | None, str | None]:
    """`?<param>=3` checked against the store: (the id, None), or (None, what is wrong with it); (None, None) when
    the URL names none. `what` is the thing the id names ("run", "study"), for the message; `named`, an example
    name where the page takes names too (looked up before the id)."""
    text = ",".join(value) if isinstance(value, (list, tuple)) else (value or "")
    text = text.strip().removeprefix("#")
    if not text:
        return None, None
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        if named:  # no name matched either
            return None, f"no {what} is named {text!r}: use a {what}'s name or id, e.g. ?{param}={named} or ?{param}=3"
        return None, f"{text!r} is not a {what} id: use a number, e.g. ?{param}=3"
    if int(text) not in set(known_ids):
        return None, f"no {what} #{int(text)}: deleted, or from another database"
    return int(text), None


def resolve_run(value: str | Sequence[str] | None, known_ids: Iterable[int]) -> tuple[int | None, str | None]:
    """`/runs?run=7`, the link to one run's view, checked against the store (see `resolve_one`)."""
    return resolve_one(value, known_ids, what="run", param="run")


def resolve_study(value: str | Sequence[str] | None, known_ids: Iterable[int]) -> tuple[int | None, str | None]:
    """`/studies?study=3` checked against the store (see `resolve_one`); the page looks names up first, so a value
    that is no id is no name either."""
    return resolve_one(value, known_ids, what="study", param="study", named="bn-act-loss")
