"""The teaching page's counter-examples quote the committed results: each number on it is
recomputed here from the leaderboards and the finite-width table and must appear as printed."""

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "vanishing-gradients.md"
BOARDS = ROOT / "results" / "leaderboards"


def section() -> str:
    text = PAGE.read_text()
    start = text.index("## 7. What the symptoms do not prove")
    return text[start:text.index("## Where the numbers come from")]


def row(board: str, entry: str, **where) -> pd.Series:
    frame = pd.read_csv(BOARDS / f"{board}.csv")
    rows = frame[frame["entry"] == entry]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, (board, entry, where, len(rows))
    return rows.iloc[0]


def claims() -> list[tuple[str, str]]:
    relu64 = row("depth_activation_by_depth", "relu / he_normal / matched", frontier_value=64)
    sigmoid = row("normalization_residual_by_depth",
                  "mlp_56 / none / residual / sigmoid / xavier_normal")
    tanh = row("normalization_residual_by_depth", "mlp_56 / none / residual / tanh / xavier_normal")
    wide = row("finite_width", "256 / depth 64, beta 0.25")
    none = row("clipping_vanishing", "none")
    at1 = row("clipping_vanishing", "global norm at 1")
    at001 = row("clipping_vanishing", "global norm at 0.01")
    init = pd.read_csv(ROOT / "results" / "finite_width" / "init.csv")
    beta1 = init[(init["network"] == "relu") & (init["depth"] == 64) & (init["width"] == 64)].iloc[0]
    plateaued = round(relu64["plateau_rate"] * relu64["n_seeds"])
    return [
        ("|log10 a| of ReLU/He at depth 64", f"|log10 a| = {relu64['abs_log10_attenuation_init']:.2f}"),
        ("its accuracy", f"{relu64['mean']:.3f} ± {relu64['std']:.3f}"),
        ("no seed at the target", "no seed reaches the target" if relu64["n_reached"] == 0 else "?"),
        ("backward variance at beta 1", f"{beta1['backward_var']:.2f}"),
        ("typical example at beta 1", f"10^{beta1['log10_median_ratio']:.2f}"),
        ("batch RMS at beta 1", f"10^{beta1['log10_rms_ratio']:.2f}"),
        ("four times wider", f"reaches {wide['mean']:.3f}"),
        ("sigmoid residual saturation", f"{100 * sigmoid['tail_saturation']:.0f} %"),
        ("sigmoid residual accuracy", f"{sigmoid['mean']:.3f} ({sigmoid['n_reached']} of "
                                      f"{sigmoid['n_seeds']} seeds"),
        ("tanh residual", f"{100 * tanh['tail_saturation']:.0f} % and {tanh['mean']:.3f} "
                          f"({tanh['n_reached']} of {tanh['n_seeds']})"),
        ("plateaued seeds", f"{plateaued} of {relu64['n_seeds']}"),
        ("clipping: decades lost at init", f"{-none['log10_attenuation_init']:.1f} decades"),
        ("clipping at 1 equals no clipping", f"same {at1['mean']:.3f} ± {at1['std']:.3f}"
                                             if (at1["mean"], at1["std"]) == (none["mean"], none["std"])
                                             else "?"),
        ("clipping at 0.01", f"{at001['mean']:.3f} ± {at001['std']:.3f}"),
        ("clipping at 0.01, end of training", f"{-at001['log10_attenuation_final']:.1f} decades"),
    ]


@pytest.mark.parametrize("what,text", claims(), ids=[c[0] for c in claims()])
def test_the_page_prints_the_committed_number(what, text):
    assert text in " ".join(section().split()), f"{what}: the page should say {text!r}"
