"""Paper tables that read on a two-column page: one number format per column, bold that shows,
captions that promise only what the rows show, and floats that fit (checked by pdflatex)."""

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from fixtures_records import record, toy_study

from vgbench.report import build_frames, by_setting, leaderboard, tuning
from vgbench.report.build import _write_all_tables
from vgbench.report.index import Output
from vgbench.report.table_layout import GEOMETRY, PACKAGES, text_width
from vgbench.report.tables import LATEX, MARKDOWN, latex_table, markdown_table, theory_table_text

DEPTHS = (2, 4, 8, 16, 32, 64, 128, 256)
ENTRIES = [("leaky_relu", "xavier_normal"), ("leaky_relu", "he_normal"), ("relu", "he_normal"),
           ("relu", "xavier_normal"), ("tanh", "xavier_normal"), ("tanh", "orthogonal"),
           ("sigmoid", "xavier_normal"), ("sigmoid", "lecun_normal")]


def tables_of(records):
    runs, _ = tuning.choose(build_frames(records).runs)
    return runs, leaderboard(runs), by_setting(runs)


@pytest.fixture(scope="module")
def wide():
    """8 entries with long names x 8 depths, lr tuned over two values, some diverged seeds."""
    records = []
    for i, (activation, init) in enumerate(ENTRIES):
        for j, depth in enumerate(DEPTHS):
            for lr in (0.01, 0.1):
                accuracy = max(0.97 - 0.02 * i * j - 0.01 * (lr == 0.01), 0.05)
                rec = record(study="wide", depth=depth, activation=activation, init=init, lr=lr,
                             accuracy=[accuracy, accuracy + 0.01, accuracy - 0.01],
                             status=["ok", "ok", "diverged" if (i + j) % 5 == 0 else "ok"],
                             grid_axes={"depth": depth, "activation": activation, "init": init,
                                        "lr": lr})
                rec["metrics"]["final_val_accuracy"] = [accuracy] * 3
                rec["tuning"] = {"lr": [0.01, 0.1]}
                records.append(rec)
    return tables_of(records)


@pytest.fixture(scope="module")
def per_value():
    """Each entry runs at one depth, named in its architecture (mlp_2, mlp_8), like
    normalization_residual's mlp_12 / mlp_56 / cnn_57."""
    records = []
    for depth in (2, 8):
        for activation, accuracy in (("relu", 0.9), ("tanh", 0.8), ("sigmoid", 0.3)):
            records.append(record(study="per_value", depth=depth, activation=activation,
                                  accuracy=[accuracy - 0.01 * depth, accuracy, accuracy + 0.01],
                                  grid_axes={"architecture": f"mlp_{depth}", "depth": depth,
                                             "activation": activation}))
    runs = build_frames(records).runs
    return runs, leaderboard(runs, baseline={"activation": "sigmoid"},
                             within=["architecture"]), by_setting(runs)


@pytest.fixture(scope="module")
def small_values():
    """Three entries at one depth whose means are 2.33e-4, 0.0024 and 0.050."""
    records = [record(study="small", depth=4, activation=activation, accuracy=[mean] * 3)
               for activation, mean in (("relu", 2.33e-4), ("tanh", 0.0024), ("sigmoid", 0.050))]
    return tables_of(records)


def theory_text(dialect, toy_runs):
    agreement = pd.DataFrame({
        "activation": ["tanh", "tanh", "relu"], "init": ["xavier_normal", "naive", "he_normal"],
        "width": [64, 64, 64], "depth": [32, 32, 32], "sigma_w2": [1.0, 0.333, 2.0],
        "sigma_b2": [0.0, 0.05, 0.0], "q_star": [0.0, 0.02, float("inf")],
        "chi1": [1.0, 0.3331, 1.0], "predicted_fit": [0.0, -0.2387, 0.0],
        "measured": [-0.0012, -0.2391, 0.0404], "ci_low": [-0.004, -0.245, 0.03],
        "ci_high": [0.0016, -0.233, 0.051], "rel_error": [float("nan"), 0.0017, float("nan")],
        "agrees": [True, True, False]})
    return theory_table_text(agreement, toy_runs, dialect, window=slice(1, 29), study="theory")


def cells(markdown: str, column: str) -> list[str]:
    """The cells under ``column`` in the first pipe table of ``markdown`` that has it."""
    for block in markdown.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            header = [c.strip() for c in lines[0].strip("|").split(" | ")]
            if column in header:
                at = header.index(column)
                return [row.strip("|").split(" | ")[at].strip() for row in lines[2:]]
    raise AssertionError(f"no column {column}")


def number_style(cell: str) -> tuple:
    """(scientific?, decimals) of the first number in a cell."""
    cell = cell.replace("*", "")
    sci = re.search(r"e[−-]?\d", cell) is not None
    decimals = len(re.search(r"\d+\.?(\d*)", cell).group(1))
    return sci, decimals


def test_a_column_has_one_number_format(small_values):
    md = markdown_table(*small_values)
    column = cells(md, "test accuracy")
    assert len(column) == 3
    assert len({number_style(c) for c in column}) == 1, column
    tex = latex_table(*small_values)
    assert tex.count(r"\times10^{") >= 3          # 2.33e-4 beside 0.050: all scientific


def test_bold_of_a_math_number_shows(small_values):
    # the best (0.050) is bold and written in math mode: \textbf alone would not bold it
    tex = latex_table(*small_values)
    bold = re.findall(r"\{\\bfseries\\boldmath [^\n]*?\$[^$]+\$", tex)
    assert bold, tex
    assert r"\textbf{$" not in tex


def test_no_scaling_table_for_an_axis_with_one_value(small_values):
    tex, md = latex_table(*small_values), markdown_table(*small_values)
    assert "-scaling" not in tex and "frontier" not in md
    assert tex.count(r"\begin{tabular}") >= 1 and "at depth 4" in md


def test_entries_at_one_value_each_get_a_comparison_per_value(per_value):
    md = markdown_table(*per_value)
    assert "frontier" not in md and "against depth" not in md
    blocks = [b for b in md.split("\n\n**") if "| architecture / activation |" in b]
    assert len(blocks) == 2
    for block, depth in zip(blocks, (2, 8)):
        caption = block.splitlines()[0]
        other = 8 if depth == 2 else 2
        assert f"at depth {depth}:" in caption and f"depth {other}" not in caption
        rows = [line for line in block.splitlines() if line.startswith("| mlp_")]
        assert len(rows) == 3 and all(r.startswith(f"| mlp_{depth} /") for r in rows), rows
    tex = latex_table(*per_value)
    assert len(re.findall(r"\\caption\[[^]]*at depth 2\]", tex)) >= 1
    assert len(re.findall(r"\\caption\[[^]]*at depth 8\]", tex)) >= 1


def test_a_caption_promises_bold_only_where_a_cell_is_bold():
    # one entry diverged on every seed: a single finite mean, nothing to set in bold
    records = [record(activation="relu", depth=4, accuracy=[0.9, 0.92, 0.94]),
               record(activation="sigmoid", depth=4, status=["diverged"] * 3,
                      accuracy=[None] * 3)]
    tex = latex_table(*tables_of(records))
    assert r"\bfseries" not in tex and "in bold" not in tex


def test_captions_have_a_short_form_and_tables_are_never_scaled(wide, per_value, small_values):
    toy_runs = build_frames(toy_study()).runs
    texts = [latex_table(*t) for t in (wide, per_value, small_values)]
    texts.append(theory_text(LATEX, toy_runs))
    for tex in texts:
        assert r"\resizebox" not in tex and r"\scalebox" not in tex
        assert tex.count(r"\caption[") == tex.count(r"\caption") > 0
        for short in re.findall(r"\\caption\[([^]]*)\]", tex):
            assert len(short.split()) <= 14, short


def test_a_wide_study_is_split_into_tables_that_repeat_the_entry_column(wide):
    tex = latex_table(*wide)
    floats = re.findall(r"\\begin\{(table\*?)\}(.*?)\\end\{\1\}", tex, re.S)
    scaling = [body for _, body in floats if "-scaling" in body]
    assert len(scaling) >= 2                         # 8 depths do not fit one page width
    shown = []
    for body in scaling:
        header = next(line for line in body.splitlines() if line.startswith("activation / init"))
        shown += header.split(" & ")[1:]
        assert "leaky\\_relu / xavier\\_normal" in body
    assert [h.strip(" \\") for h in shown if h.strip(" \\") != "frontier"] == [str(d) for d in DEPTHS]
    tabulars = re.findall(r"\\begin\{tabular\}.*?\\end\{tabular\}", "".join(scaling), re.S)
    assert not any("lr " in t for t in tabulars)      # the chosen lr has a table of its own
    assert "-chosen" in tex


def test_markdown_and_latex_write_a_column_alike(wide):
    md, tex = markdown_table(*wide), latex_table(*wide)
    for cell in cells(md, "depth 256"):
        number = re.match(r"[*]*([0-9.]+)", cell)
        if number:
            assert number.group(1) in tex


def test_the_width_estimate_is_close_to_what_latex_sets():
    # widths measured with \settowidth at \footnotesize in a 10 pt article
    measured = {r"0.971 {\scriptsize $\pm$ 0.010}": 49.35, r"$2.33\times10^{-4}$": 43.94,
                r"leaky\_relu / xavier\_normal": 97.99, r"$-$25.2 $\to$ $-$26.9": 57.61}
    for text, width in measured.items():
        assert text_width(text) == pytest.approx(width, rel=0.06), text


def _compile(folder: Path, name: str) -> str:
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", name],
                          cwd=folder, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    return (folder / name).with_suffix(".log").read_text(errors="replace")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_every_table_fits_a_two_column_page(wide, per_value, small_values, tmp_path):
    toy = build_frames(toy_study()).runs
    tables = tmp_path / "tables"
    tables.mkdir()
    outputs = []
    for name, parts in {"toy": (toy, leaderboard(toy), by_setting(toy)), "wide": wide,
                        "per_value": per_value, "small": small_values}.items():
        path = tables / f"{name}.tex"
        path.write_text(latex_table(*parts))
        outputs.append(Output("table", name, name, "", (path, tables / f"{name}.md")))
    (tmp_path / "theory").mkdir()
    theory = tmp_path / "theory" / "theory_agreement.tex"
    theory.write_text(theory_text(LATEX, toy))
    outputs.append(Output("table", "theory", "theory_agreement", "", (theory,)))
    written = _write_all_tables(outputs, tmp_path)
    assert [o.paths for o in written] == [(tables / "all.tex",)]
    # each file alone, in a two-column paper of the target geometry
    for path in [o.paths[0] for o in outputs]:
        (path.parent / "paper.tex").write_text(
            "\\documentclass[10pt,twocolumn]{article}\n"
            f"\\usepackage[{GEOMETRY}]{{geometry}}\n"
            + "".join(f"\\usepackage{{{p}}}\n" for p in PACKAGES)
            + f"\\begin{{document}}\n\\input{{{path.stem}}}\n\\clearpage\n\\end{{document}}\n")
        log = _compile(path.parent, "paper.tex")
        assert "Overfull \\hbox" not in log, (path.name, log[log.find("Overfull"):][:600])
    # all of them together, as the report writes them
    log = _compile(tables, "all.tex")
    assert "Overfull \\hbox" not in log and "Too many unprocessed floats" not in log
    assert (tables / "all.pdf").stat().st_size > 10_000
    for name in ("toy", "wide", "per_value", "small", "../theory/theory_agreement"):
        assert f"\\input{{{name}}}" in (tables / "all.tex").read_text()


def test_theory_table_in_markdown_keeps_one_format_per_column():
    toy = build_frames(toy_study()).runs
    md = theory_text(MARKDOWN, toy)
    assert len({number_style(c) for c in cells(md, "σb²")}) == 1
    assert "**no**" in md
