"""Paper tables: booktabs LaTeX that compiles, Markdown that parses, provenance footers."""

import re
import shutil
import subprocess

import pytest
from fixtures_records import toy_study

from vgbench.report import build_frames, by_setting, leaderboard
from vgbench.report.table_layout import GEOMETRY
from vgbench.report.tables import (
    LATEX,
    MARKDOWN,
    latex_escape,
    latex_table,
    markdown_table,
    number,
    provenance,
    seed_text,
)


@pytest.fixture(scope="module")
def toy():
    runs = build_frames(toy_study()).runs
    return runs, leaderboard(runs), by_setting(runs)


def tabulars(tex):
    return re.findall(r"\\begin\{tabular\}\{@\{\}(\w+)@\{\}\}(.*?)\\end\{tabular\}", tex, re.S)


def test_latex_structure(toy):
    tex = latex_table(*toy)
    assert tex.isascii()
    found = tabulars(tex)
    assert len(found) == 2                            # scaling table and comparison table
    for spec, body in found:
        assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        for line in rows:                             # every row fills every column
            if r"\multicolumn" not in line:
                assert line.count("&") - line.count(r"\&") == len(spec) - 1, line
    scaling, comparison = (body for _, body in found)
    # relu is best at depth 4 (0.92 vs 0.10) and marked bold; the diverged seed is counted
    assert r"{\bfseries\boldmath 0.920 {\scriptsize $\pm$ 0.014}} (1 failed)" in scaling
    assert r"$\geq$4" in scaling                      # frontier reached at the deepest depth
    assert r"relu$^\dagger$" in comparison and "2/3" in comparison and "1/3" not in comparison
    assert len(re.findall(r"\\begin\{table\*?\}", tex)) == 2 and tex.count("Provenance:") == 2


def test_provenance_footer_names_code_grid_seeds_date_and_machine(toy):
    runs = toy[0]
    facts = provenance(runs)
    assert facts["vgbench"] == "0.1.0" and facts["commit"] == "0123456789ab"
    assert facts["grid"] == runs["grid_hash"].iloc[0] and facts["date"] == "2025-01-15"
    assert facts["device"] == "cpu (cpu x1)" and facts["runs"] == "4"
    for text in (latex_table(*toy), markdown_table(*toy)):
        footer = text[text.rindex("Provenance"):]
        for needle in ("vgbench 0.1.0", "0123456789ab", runs["grid_hash"].iloc[0],
                       "2025-01-15", "cpu (cpu x1)", "JAX 0.4.35"):
            assert needle in footer, needle
    assert "seeds 0--2" in latex_table(*toy) and "seeds 0–2" in markdown_table(*toy)


def test_dirty_commit_keeps_its_flag(toy):
    runs = toy[0].assign(env_git_commit="6b3b9728d87d051669fb7f5f7119bb12a0cd3baf+dirty")
    assert provenance(runs)["commit"] == "6b3b9728d87d+dirty"


def test_markdown_tables_have_consistent_columns(toy):
    md = markdown_table(*toy)
    blocks = [b for b in md.split("\n\n") if b.startswith("|")]
    assert len(blocks) == 2
    for block in blocks:
        widths = {len(re.split(r"(?<!\\)\|", line)) for line in block.splitlines()}
        assert len(widths) == 1, block
    assert "**0.920 ± 0.014** (1 failed)" in md and "relu†" in md


def test_numbers_and_escapes():
    assert number(0.91234, LATEX) == "0.912"
    assert number(-0.5, LATEX, sign=True) == "$-$0.500"
    assert number(-0.5, MARKDOWN, sign=True) == "−0.500"
    assert number(0.5, MARKDOWN, sign=True) == "+0.500"
    assert number(3.2e-7, LATEX) == r"$3.20\times10^{-7}$"
    assert number(float("inf"), LATEX) == r"$\infty$"
    assert number(float("nan"), MARKDOWN) == "–"
    assert latex_escape("he_normal & 50%") == r"he\_normal \& 50\%"
    assert seed_text([0, 1, 2, 3, 7, 9, 10], MARKDOWN) == "0–3, 7, 9–10"


def _pdflatex(tmp_path, body: str, preamble: str = "") -> str:
    (tmp_path / "table.tex").write_text(body)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[twocolumn]{article}\n\\usepackage{booktabs}\n"
        f"\\usepackage[{GEOMETRY}]{{geometry}}\n"
        f"{preamble}\\begin{{document}}\n\\input{{table.tex}}\n\\end{{document}}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                             "paper.tex"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
    return (tmp_path / "paper.log").read_text(errors="replace")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles_with_plain_pdflatex_and_booktabs(toy, tmp_path):
    log = _pdflatex(tmp_path, latex_table(*toy))
    assert "Overfull \\hbox" not in log


def test_an_entry_against_a_baseline_that_diverged_on_every_seed():
    # no seed on which both finished: no difference to show, but the entry wins every pair
    from fixtures_records import record

    runs = build_frames([
        record(activation="relu", status=["ok"] * 3, accuracy=[0.90, 0.92, 0.94]),
        record(activation="sigmoid", status=["diverged"] * 3, accuracy=[None] * 3),
    ]).runs
    board = leaderboard(runs, baseline="sigmoid")
    md = markdown_table(runs, board, by_setting(runs))
    row = next(line for line in md.splitlines() if line.startswith("| relu"))
    assert row.endswith("| – | 1.00 |"), row
    base = next(line for line in md.splitlines() if line.startswith("| sigmoid†"))
    assert "(3 failed)" in base and base.endswith("| – | – |"), base
