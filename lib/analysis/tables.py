"""Tables as a reader of the book should see them: no index column unless it means something, no truncated
cells, whole numbers as integers, other numbers to a few significant figures, confidence intervals as
"[low, high]", and no raw reprs.

`show(df)` is what a notebook displays instead of a bare DataFrame; `set_display_options()` (called by
`session.start`) makes any DataFrame that is still displayed bare follow the same number rules and never cut a
cell short.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

MISSING = "–"


def number(x: Any, digits: int = 3, whole: bool | None = None) -> str:
    """x as text: integers (and, with whole=True, integer-valued floats) with thousands separators; other finite
    numbers to `digits` significant figures (scientific below 1e-3 or from 1e6); NaN/None as '–'."""
    if x is None or (isinstance(x, Real) and not isinstance(x, Integral) and math.isnan(float(x))):
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, Integral):
        return f"{int(x):,}"
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if whole or (whole is None and x.is_integer() and abs(x) < 1e6):
        return f"{int(round(x)):,}"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e6:
        return f"{x:,.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
    return f"{x:.{digits - 1}e}"


def _is_pair(x: Any) -> bool:
    return (isinstance(x, (tuple, list, np.ndarray)) and len(x) == 2
            and all(isinstance(v, Real) or v is None for v in x))


def cell(x: Any, digits: int = 3, whole: bool | None = None) -> str:
    """One cell as text: a (low, high) pair as '[low, high]', numbers by `number`, anything else as str."""
    if _is_pair(x):
        lo, hi = x
        return f"[{number(lo, digits, whole)}, {number(hi, digits, whole)}]"
    if isinstance(x, (Real, np.generic)) or x is None:
        return number(x, digits, whole)
    if isinstance(x, str):
        return x
    try:
        if pd.isna(x):
            return MISSING
    except (TypeError, ValueError):
        pass
    return str(x)


def _whole(col: pd.Series) -> bool | None:
    """True for a float column whose values are all whole numbers (counts stored as floats), else None."""
    if not pd.api.types.is_float_dtype(col):
        return None
    vals = col.dropna().to_numpy()
    return True if len(vals) and bool(np.all(np.isfinite(vals) & (vals == np.round(vals)))) and \
        bool(np.all(np.abs(vals) < 1e15)) else False


def text_frame(df: pd.DataFrame, digits: int = 3, index: bool | str = "auto") -> pd.DataFrame:
    """df with every cell as display text (see `cell`); index='auto' keeps a named or non-integer index as leading
    column(s) and drops an unnamed integer one (row numbers); True always keeps it, False always drops it."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"show() takes a pandas DataFrame, got {type(df).__name__}")
    if index not in ("auto", True, False):
        raise ValueError(f"index={index!r}: use 'auto', True or False")
    # an unnamed integer index (0..n-1, or what is left of it after filtering) is row numbering, not data
    plain = all(n is None for n in df.index.names) and pd.api.types.is_integer_dtype(df.index)
    keep = index is True or (index == "auto" and not plain)
    if keep:
        df = df.reset_index()
    out = pd.DataFrame(index=range(len(df)))
    for j, name in enumerate(df.columns):
        col = df.iloc[:, j]
        whole = _whole(col)
        label = " / ".join(str(x) for x in name if str(x)) if isinstance(name, tuple) else str(name)
        out[label if label not in out.columns else f"{label} ({j})"] = [cell(v, digits, whole) for v in col]
    return out


def show(df: pd.DataFrame, digits: int = 3, index: bool | str = "auto", caption: str | None = None) -> Styler:
    """A DataFrame for display (HTML in the book, text in a console): cells formatted by `text_frame`, no index
    column, nothing truncated, cells HTML-escaped; `caption` above it."""
    shown = text_frame(df, digits, index)
    sty = shown.style.hide(axis="index").format(escape="html")
    if caption:
        sty = sty.set_caption(caption)
    return sty


def _float_format(x: float) -> str:
    return number(x, digits=4)


def set_display_options() -> None:
    """pandas display options for the book: never truncate a cell or a column list, floats by `number`."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 200)
    pd.set_option("display.float_format", _float_format)
