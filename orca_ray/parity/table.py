"""A row of the parity table: what is compared, ORCA's value, ours, the relative error and its tolerance;
how rows are made from two arrays (`compare`) and printed (`format_table`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# tolerances (relative error) by what is compared
EXACT = 1e-6  # copies and closed forms: LayerNorm/positions/patch conv, schedules, splits
FWD = 1e-4  # one float32 forward pass through the same weights
TRAIN = 2e-3  # weights after several optimiser steps (float32 accumulation order differs)
OTDD = 1e-3  # OTDD and its gradient (annealed Sinkhorn in float32; see the README's OTDD table)


@dataclass
class Check:
    """One row of the parity table.

    Args:
        item: what is compared, e.g. "refine sgd_accum: lr per micro-batch".
        orca: ORCA's value (a scalar, or the norm of ORCA's vector).
        ours: ours, in the same form; None when it could not be computed.
        rel_err: ‖ours − orca‖ / ‖orca‖ (or as stated in `note`).
        tol: the tolerance on rel_err.
        note: why a row failed when it has no value (a missing function, an error).
    """

    item: str
    orca: float
    ours: float | None
    rel_err: float
    tol: float
    note: str = ""

    @property
    def ok(self) -> bool:
        """Computed, finite and within tolerance."""
        return self.ours is not None and math.isfinite(self.rel_err) and self.rel_err <= self.tol


class Missing(RuntimeError):
    """Our code lacks a function or behaviour the comparison needs."""


def _rel(orca, ours, scale=None) -> float:
    a = np.asarray(orca, dtype=np.float64)
    b = np.asarray(ours, dtype=np.float64)
    if a.shape != b.shape:
        return math.inf
    den = float(np.linalg.norm(a.ravel())) if scale is None else float(scale)
    num = float(np.linalg.norm((b - a).ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _norm(a) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel()))


def compare(item: str, orca, ours, tol: float, scale=None) -> Check:
    """A row comparing two arrays (or scalars); for arrays the table shows their norms.

    Args:
        item: the row's name.
        orca, ours: the values.
        tol: tolerance on the relative error.
        scale: divide the error norm by this instead of ‖orca‖ (e.g. the size of an update).
    """
    a, b = np.asarray(orca, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    shown = (float(a), float(b)) if a.ndim == 0 and b.ndim == 0 else (_norm(a), _norm(b))
    note = "" if a.shape == b.shape else f"shape {tuple(b.shape)} != ORCA's {tuple(a.shape)}"
    return Check(item, shown[0], shown[1], _rel(a, b, scale), tol, note)


def format_table(rows: list[Check]) -> str:
    """The parity table as text (one line per row, failing rows say why, and a count of rows within tolerance).

    Args:
        rows: the rows (`run_all`, `run_case`).
    """

    def num(v):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.6g}"

    width = max([len(r.item) for r in rows] + [4])
    lines = [f"{'item':<{width}}  {'ORCA':>12}  {'ours':>12}  {'rel.err':>9}  {'tol':>7}  ok"]
    for r in rows:
        err = "-" if not math.isfinite(r.rel_err) else f"{r.rel_err:.2e}"
        tol = "-" if r.ours is None else f"{r.tol:.0e}"
        line = f"{r.item:<{width}}  {num(r.orca):>12}  {num(r.ours):>12}  {err:>9}  {tol:>7}  {'yes' if r.ok else 'NO'}"
        lines.append(line + (f"  ({r.note})" if r.note else ""))
    bad = sum(not r.ok for r in rows)
    lines.append(f"{len(rows) - bad} of {len(rows)} items within tolerance")
    return "\n".join(lines)
