"""Page layout of the LaTeX tables: how wide a tabular will be, which float it needs, how a
wide one is split, the float itself and a standalone document of them all.

The target is the common two-column paper (ICML, NeurIPS two-column and the like): 10 pt base
font, ``\\textwidth`` 6.75 in, ``\\columnsep`` 0.25 in, so ``\\columnwidth`` 3.25 in, tables
set in ``\\footnotesize``. A table that fits the column is a ``table``; one that fits the page
width a ``table*``; a wider one is split into parts that do (see :func:`split_to_fit`). Widths
are estimated from the glyph widths of Computer Modern at 8 pt (``cmr8``, measured with
``\\settowidth``); the compile test in ``tests/test_report_layout.py`` checks the estimate.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Callable, Sequence

POINTS_PER_INCH = 72.27
TEXT_WIDTH_IN, COLUMN_SEP_IN = 6.75, 0.25
COLUMN_WIDTH_PT = (TEXT_WIDTH_IN - COLUMN_SEP_IN) / 2 * POINTS_PER_INCH    # 234.9 pt
TEXT_WIDTH_PT = TEXT_WIDTH_IN * POINTS_PER_INCH                            # 487.8 pt
TABCOLSEP_PT = 4.0
SLACK = 0.97   # the estimate is within a few percent: keep that much room
PACKAGES = ("booktabs",)   # all the tables need (standard: texlive-latex-recommended)
GEOMETRY = (f"letterpaper,textwidth={TEXT_WIDTH_IN}in,columnsep={COLUMN_SEP_IN}in,"
            "textheight=9in,centering")

# glyph widths in pt at \footnotesize in a 10 pt document (cmr8 text, cmmi8/cmsy8 math)
_WIDTH = {**dict.fromkeys("0123456789*/\"ag", 4.25), **dict.fromkeys(".,:;!'`[]il", 2.36),
          " ": 2.83, "(": 3.31, ")": 3.31, "-": 2.83, "+": 6.61, "=": 6.61, "<": 4.01,
          ">": 4.01, "?": 4.01, "@": 6.61, "b": 4.72, "c": 3.78, "d": 4.72, "e": 3.78, "f": 2.60,
          "h": 4.72, "j": 2.60, "k": 4.49, "m": 7.08, "n": 4.72, "o": 4.25, "p": 4.72, "q": 4.49,
          "r": 3.31, "s": 3.35, "t": 3.31, "u": 4.72, "v": 4.49, "w": 6.14, "x": 4.49, "y": 4.49,
          "z": 3.78, "_": 3.06, "&": 6.61, "%": 7.08, "#": 7.08, "|": 2.36,
          "±": 6.61, "×": 6.61, "→": 8.50, "†": 3.94, "‡": 3.94, "≥": 6.61, "∞": 8.50,
          "Δ": 7.08, "−": 6.61, "§": 3.94, "σ": 4.9, "χ": 5.3}
_UPPER = 6.3      # an average capital
_SMALLER = {r"\scriptsize": 0.94, r"\tiny": 0.62}
_BOLD = 1.12
_SCRIPT = 0.8     # a superscript or subscript in math (6 pt glyphs, a little wide)
_MATH = {r"\pm": "±", r"\times": "×", r"\to": "→", r"\dagger": "†", r"\ddagger": "‡",
         r"\geq": "≥", r"\infty": "∞", r"\Delta": "Δ", r"\S": "§", r"\sigma": "σ", r"\chi": "χ",
         r"\log": "log", r"\textbackslash": "\\", r"\textasciitilde": "~",
         r"\textasciicircum": "^"}
_BINARY = ("±", "×", "→", "≥", "−")
_MEDMUSKIP = 1.8   # 4/18 em at 8 pt, each side of a binary operator between two operands
_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\.|[{}$^_]|[^\\{}$^_]")


def text_width(latex: str) -> float:
    """The estimated width in pt of one line of table-cell LaTeX at ``\\footnotesize``."""
    width, scales, scale, math = 0.0, [], 1.0, False
    operand = script = bold = False   # a glyph before; a ^ or _ waiting for its argument; a \textbf for its group
    for token in _TOKEN.findall(latex):
        if token == "{":
            scales.append(scale)
            scale *= (_SCRIPT if script else 1.0) * (_BOLD if bold else 1.0)
            script = bold = False
        elif token == "}":
            scale = scales.pop() if scales else 1.0
        elif token == "$":
            math = not math
        elif math and token in "^_":
            script = True
        elif token in _SMALLER:
            scale *= _SMALLER[token]
        elif token == r"\bfseries":
            scale *= _BOLD
        elif token == r"\textbf":
            bold = True
        else:
            if token.startswith("\\") and len(token) == 2:       # \_ \& \% \$ \#
                glyph = token[1]
            else:
                glyph = _MATH.get(token, "" if token.startswith("\\") else token)
            glyph = "−" if math and glyph == "-" else "" if math and glyph == " " else glyph
            size = scale * (_SCRIPT if script else 1.0)
            width += size * sum(_WIDTH.get(c, _UPPER if c.isupper() else 4.5) for c in glyph)
            if math and glyph in _BINARY and operand:   # spaced as a binary operator
                width += 2 * _MEDMUSKIP * size
            operand = math and glyph[-1:].isalnum() or glyph == ")"
            script = script and not glyph
    return width


def tabular_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> float:
    """The estimated width in pt of a ``@{}``-trimmed tabular of these cells."""
    columns = list(zip(header, *rows))
    return (sum(max(text_width(cell) for cell in column) for column in columns)
            + 2 * TABCOLSEP_PT * (len(columns) - 1))


@dataclass(frozen=True)
class Placed:
    """A table with where it goes: ``wide`` is a ``table*`` (the page width)."""

    table: object
    wide: bool


def fits(width: float) -> str | None:
    """"column", "page" or None: the narrowest float ``width`` pt fits in."""
    if width <= SLACK * COLUMN_WIDTH_PT:
        return "column"
    return "page" if width <= SLACK * TEXT_WIDTH_PT else None


def split_to_fit(build: Callable[[list], object], units: list,
                 width: Callable[[object], float]) -> list[Placed]:
    """The fewest tables that fit, each made by ``build`` from a run of consecutive ``units``
    (columns or groups of columns that stay together; the rows' label column is repeated in
    every part by ``build``): one table in the column if it fits there, else across the page,
    else split into 2, 3, ... parts that each fit the page, the partition with the narrowest
    widest part chosen. A single unit too wide for the page is placed across it all the same
    (the compile test reports the overflow)."""
    for n in range(1, len(units) + 1):
        found = []
        for cuts in itertools.combinations(range(1, len(units)), n - 1):
            bounds = (0, *cuts, len(units))
            parts = [build(units[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            widths = [width(t) for t in parts]
            if all(fits(w) for w in widths):
                found.append((max(widths), parts, widths))
        if found:
            _, parts, widths = min(found, key=lambda f: f[0])
            wide = any(fits(w) == "page" for w in widths)
            return [Placed(t, wide) for t in parts]
    return [Placed(build(units), True)]


def float_text(placed: Placed, footer: str) -> str:
    """One booktabs float: short and long caption, label, the tabular and the provenance."""
    table = placed.table
    environment = "table*" if placed.wide else "table"
    align = table.alignment()
    lines = [rf"\begin{{{environment}}}[tbp]", r"\centering", r"\footnotesize",
             rf"\setlength{{\tabcolsep}}{{{TABCOLSEP_PT:g}pt}}",
             rf"\caption[{table.short}]{{{table.caption}}}", rf"\label{{tab:{table.label}}}",
             rf"\begin{{tabular}}{{@{{}}{align}@{{}}}}", r"\toprule"]
    for text, first, last in table.groups:
        span = rf"\multicolumn{{{last - first + 1}}}{{c}}{{{text}}}"
        lines.append(" & " * (first - 1) + span + " &" * (len(table.header) - last) + r" \\")
        lines.append(rf"\cmidrule(lr){{{first}-{last}}}")
    lines += [" & ".join(table.header) + r" \\", r"\midrule"]
    lines += [" & ".join(cells) + r" \\" for cells in table.rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\par\smallskip",
              rf"{{\scriptsize\raggedright Provenance: {footer}\par}}",
              rf"\end{{{environment}}}", ""]
    return "\n".join(lines)


def document_text(inputs: Sequence[str]) -> str:
    """A standalone two-column document of the target geometry that ``\\input``s each path
    (relative to the document, without ``.tex``), a ``\\clearpage`` after each so that no
    float waits for more than its own file's; a list of tables comes first."""
    lines = ["% Generated by `vgbench report`; compile with `pdflatex all.tex` in this folder.",
             r"\documentclass[10pt,twocolumn]{article}",
             rf"\usepackage[{GEOMETRY}]{{geometry}}",
             *(rf"\usepackage{{{p}}}" for p in PACKAGES),
             r"\setcounter{totalnumber}{6}\setcounter{topnumber}{4}\setcounter{dbltopnumber}{4}",
             r"\renewcommand{\topfraction}{0.95}\renewcommand{\dbltopfraction}{0.95}",
             r"\renewcommand{\textfraction}{0.05}\renewcommand{\floatpagefraction}{0.6}",
             r"\renewcommand{\dblfloatpagefraction}{0.6}",
             r"\begin{document}", r"\listoftables", r"\clearpage"]
    for path in inputs:
        lines += [rf"\input{{{path}}}", r"\clearpage"]
    return "\n".join(lines + [r"\end{document}", ""])


def with_columns(table, columns: Sequence[int], *, label_suffix: str = "", short_suffix: str = ""):
    """``table`` keeping only ``columns`` (0-based), its spanning groups cut to them."""
    keep = list(columns)
    groups = []
    for text, first, last in table.groups:
        inside = [i for i, c in enumerate(keep) if first - 1 <= c <= last - 1]
        if inside:
            groups.append((text, inside[0] + 1, inside[-1] + 1))
    align = table.alignment()
    return replace(table, header=[table.header[c] for c in keep], align="".join(align[c] for c in keep),
                   rows=[[row[c] for c in keep] for row in table.rows], groups=groups,
                   label=table.label + label_suffix, short=table.short + short_suffix)
