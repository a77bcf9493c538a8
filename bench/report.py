"""Figures, their targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Target:
    """A bound a figure should meet, e.g. Target(">=", 0.75, "x xargs")."""

    op: str
    bound: float
    unit: str = ""

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets the bound (None when there is no value)."""
        if value is None or math.isnan(value):
            return None
        return _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {_num(self.bound)}{self.unit}"


@dataclass
class Figure:
    """One row of the table: a measured value, optionally a same-run baseline, a ratio, a target."""

    scenario: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None  #: the same quantity for the baseline, measured in the same run
    ratio: float | None = None  #: what the target is about, when it is a ratio
    target: Target | None = None
    note: str = ""
    met: bool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.target is not None:
            self.met = self.target.met(self.ratio if self.ratio is not None else self.value)


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    if unit == "ms" or unit == "s":
        return f"{x:.3g} {unit}" if abs(x) < 100 else f"{x:,.0f} {unit}"
    if abs(x) >= 1000:
        return f"{x:,.0f}{(' ' + unit) if unit else ''}"
    return f"{x:.3g}{(' ' + unit) if unit else ''}"


def table(figures: list[Figure]) -> str:
    """A Markdown table (it reads well in a terminal and pastes into the README)."""
    head = ["scenario", "metric", "queuectl", "baseline", "ratio", "target", "met"]
    rows = [head, ["---"] * len(head)]
    for f in figures:
        rows.append([
            f.scenario, f.metric, _num(f.value, f.unit), _num(f.baseline, f.unit),
            "" if f.ratio is None else f"{f.ratio:.2f}x",
            "" if f.target is None else str(f.target),
            {True: "met", False: "NOT MET", None: "—" if f.target is None else "n/a"}[f.met],
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for r in rows:
        if r[0] == "---":
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        else:
            lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + " |")
    return "\n".join(lines)


def markdown(rows: list[list[str]]) -> str:
    """Rows (the first is the header) as an aligned Markdown table."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows[1:]]
    return "\n".join(lines)


def side_by_side(doc: dict[str, Any]) -> str:
    """The peers' table, as issue 14 lays it out: each system's rate at each C with its ratio to
    xargs in the same run, and its enqueue cost per job (at each C, while the jobs run).

    `doc`: {"slots": [C...], "labels": {key: label}, "rows": {key: {C: {"rate", "x_xargs",
    "enqueue_ms"?}}}} (JSON turns the C keys into strings; both are read)."""
    slots = doc["slots"]
    rows = [["system", *(f"C={c} jobs/s (x xargs)" for c in slots), "enqueue per job"]]
    for key, label in doc["labels"].items():
        got = doc["rows"].get(key)
        if not got:
            continue
        at = [got.get(c) or got.get(str(c)) for c in slots]
        cells = ["" if a is None else f"{a['rate']:,.0f} ({a['x_xargs']:.2f}x)" for a in at]
        enq = [f"{a['enqueue_ms']:.2f}" for a in at if a is not None and "enqueue_ms" in a]
        rows.append([label, *cells, " / ".join(enq) + " ms" if enq else "-"])
    return markdown(rows)


def notes(figures: list[Figure]) -> str:
    """The notes of the figures that have one, as a bullet list under the table."""
    return "\n".join(f"- {f.scenario} / {f.metric}: {f.note}" for f in figures if f.note)


def write_json(path: Path, machine: dict[str, Any], config: dict[str, Any], figures: list[Figure],
               details: dict[str, Any]) -> None:
    """Everything measured, for comparing runs: machine, settings, every figure, raw details."""
    rows = []
    for f in figures:
        row = asdict(f)
        row["target"] = None if f.target is None else {"op": f.target.op, "bound": f.target.bound,
                                                        "unit": f.target.unit, "text": str(f.target)}
        rows.append(row)
    doc = {"machine": machine, "config": config, "figures": rows, "details": details}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
