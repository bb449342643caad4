"""The theory report: predictions, agreement table, tidy frames and figures, without JAX."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from vgbench import diagnostics as table
from vgbench import theory
from vgbench.report import theory as report
from vgbench.report.frames import build_frames
from vgbench.report.synthetic import make_record, make_study
from vgbench.report.theory_figures import theory_phase_figure

DEPTH = 12


def theory_record(activation, sigma_w2, sigma_b2, *, init="gaussian", slope_error=0.0,
                  noise=0.002, seeds=(0, 1, 2, 3), width=256, spectra=False, phi=None):
    """A theory-study record whose delta_norm follows the mean-field profile (times 1 +
    ``slope_error`` in slope), with seed noise; the input at q* where there is one. ``phi``:
    the activation's closed form, for one vgbench.theory does not know by name."""
    q = theory.q_star(phi or activation, sigma_w2, sigma_b2)
    scale = math.sqrt((q - sigma_b2) / sigma_w2) if 0 < q < math.inf and q != 1.0 else 1.0
    label = f"{activation} sw2={sigma_w2:g}"
    record = make_record(study="theory", grid_axes={"point": label}, seeds=seeds, task="teacher",
                         depth=DEPTH, width=width, input_dim=width, activation=activation,
                         init=init, sigma_w=math.sqrt(sigma_w2), sigma_b=math.sqrt(sigma_b2),
                         input_scale=scale, steps=0, log_every=1, theory=True)
    found = report.predict(record["config"], record["theory"])
    profile = (found["profile"] if found else np.zeros(DEPTH)) * (1 + slope_error)
    rng = np.random.default_rng(len(label))
    layers = np.arange(DEPTH + 1)[::-1]
    delta = [[list(10.0 ** (np.append(profile, profile[-1]) - 1.0
                            + noise * rng.standard_normal(DEPTH + 1) * layers / DEPTH))]
             for _ in seeds]
    diagnostics = record["diagnostics"]
    for field in table.names(shape="layer") + table.names(shape="sample"):
        if field in diagnostics:   # the readout is a layer of its own
            diagnostics[field] = [[point + point[-1:] for point in seed]
                                  for seed in diagnostics[field]]
    diagnostics["delta_norm"] = delta
    diagnostics["delta_underflow"] = [[[False] * (DEPTH + 1)] for _ in seeds]
    diagnostics["layer_names"] = [f"dense_{i + 1}" for i in range(DEPTH)] + ["output"]
    if spectra:
        probabilities = np.round(np.linspace(0, 1, 101), 2).tolist()
        spread = 0.05 if activation == "tanh" else 2.0
        record["diagnostics"]["jacobian_singular_values"] = [
            list(np.exp(spread * (np.array(probabilities) - 0.5))) for _ in seeds]
        record["diagnostics"]["jacobian_method"] = "exact"
        record["summary"]["jacobian_log10_mean_sq"] = [0.0 for _ in seeds]
    return record


@pytest.fixture(scope="module")
def records():
    return [theory_record("tanh", 0.5, 0.0025, spectra=True),
            theory_record("tanh", 2.0, 0.0025),
            theory_record("tanh", 3.0, 0.0025, slope_error=0.3),   # a run that disagrees
            theory_record("relu", 2.0, 0.0, init="he_normal", spectra=True),
            theory_record("relu", 3.0, 0.0)]


def frames_of(records):
    frames = build_frames(records)
    runs = frames.runs[frames.runs["study"] == "theory"]
    return (runs, frames.grad_stats[frames.grad_stats["study"] == "theory"],
            report.theory_inputs(records))


def predict(record, **config_changes):
    return report.predict({**record["config"], **config_changes}, record["theory"])


def test_predicted_profile_matches_theory_module():
    # off q*: the profile follows the length map from q^1
    found = predict(theory_record("tanh", 3.0, 0.0025), input_scale=0.3)
    q1 = 3.0 * 0.3 ** 2 + 0.0025
    assert found["q1"] == pytest.approx(q1, rel=1e-5)
    expected = theory.log10_delta_profile("tanh", DEPTH, 3.0, 0.0025, q1=q1)
    np.testing.assert_allclose(found["profile"], expected, rtol=1e-5, atol=1e-9)
    assert found["log10_ratio"] == pytest.approx(theory.log10_delta_ratio("tanh", 3.0, 0.0025),
                                                 rel=1e-5)   # sigma_w has 6 digits


def test_prediction_at_q_star_is_half_log10_chi1_and_the_initializer_decides_sigma2():
    found = predict(theory_record("tanh", 2.0, 0.0025))
    assert found["log10_ratio_fit"] == pytest.approx(found["log10_ratio"], rel=1e-4)
    he = predict(theory_record("relu", 2.0, 0.0, init="he_normal"))
    assert he["sigma_w2"] == 2.0 and he["log10_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert he["jacobian_log10_mean_sq"] == pytest.approx(0.0, abs=1e-9)
    relu = predict(theory_record("relu", 3.0, 0.0))
    assert relu["log10_ratio_fit"] == pytest.approx(0.5 * math.log10(1.5), rel=1e-5)
    assert relu["jacobian_log10_mean_sq"] == pytest.approx(DEPTH * math.log10(1.5), rel=1e-5)
    identity = theory_record("relu", 2.0, 0.0, init="identity")   # no Gaussian equivalent
    assert identity["theory"]["sigma_w2"] is None and predict(identity) is None
    assert report.predict(identity["config"], None) is None        # a record without inputs


def test_agreement_table_flags_the_run_that_disagrees(records):
    table = report.agreement_table(*frames_of(records)).set_index("label")
    assert set(table.index) == {"tanh sw2=0.5", "tanh sw2=2", "tanh sw2=3", "relu sw2=2",
                                "relu sw2=3"}
    assert not table.at["tanh sw2=3", "agrees"]
    assert table.drop("tanh sw2=3")["agrees"].all()
    row = table.loc["tanh sw2=0.5"]
    assert row["ci_low"] <= row["measured"] <= row["ci_high"] and row["n_seeds"] == 4
    assert row["measured"] == pytest.approx(row["predicted"], rel=0.02)
    assert row["predicted"] == pytest.approx(0.5 * math.log10(theory.chi1("tanh", 0.5, 0.0025)))
    # relative error is undefined at criticality; the absolute tolerance decides there
    assert math.isnan(table.at["relu sw2=2", "rel_error"])
    assert table.at["tanh sw2=3", "rel_error"] == pytest.approx(0.3, rel=0.1)


def test_fit_window_leaves_out_the_ends_of_deep_networks():
    assert report.fit_window(32) == slice(2, 30)
    assert report.fit_window(5) == slice(0, 5)


def test_spectra_frame_reads_the_annotated_records(records):
    spectra = report.spectra_frame(records)
    assert set(spectra["label"]) == {"tanh sw2=0.5", "relu sw2=2"}
    assert len(spectra) == 2 * 4 * 101
    assert spectra.groupby("run_id")["probability"].max().eq(1.0).all()


def test_frontier_frame_sets_each_entry_against_six_xi_c():
    depth_study = make_study("depth_activation", {"depth": [2, 8, 32],
                                                  "activation": ["tanh", "relu"],
                                                  "init": ["naive", "he_normal"]}, theory=True)
    frontiers = report.frontier_frame(build_frames(depth_study).runs).set_index("entry")
    assert len(frontiers) == 4
    naive = frontiers.loc["tanh / naive"]
    field = theory.mean_field("tanh", 1 / 3, 0.0)
    assert naive["predicted_depth"] == pytest.approx(6 * field.xi_c)
    assert frontiers.loc["relu / he_normal", "predicted_depth"] == math.inf   # edge of chaos
    assert set(frontiers["max_depth"]) == {32.0}


def test_theory_report_writes_table_and_figures(records, tmp_path):
    depth_study = make_study("depth_activation", {"depth": [2, 8, 32], "activation": ["tanh"],
                                                  "init": ["naive", "xavier_normal"]}, theory=True)
    paths = report.theory_report(records + depth_study, tmp_path, formats=("png",))
    names = {p.name for p in paths}
    assert {"theory_agreement.csv", "theory_agreement.md", "theory_agreement.tex",
            "theory_delta_profiles.png", "theory_phase_diagram.png",
            "theory_jacobian_spectra.png", "theory_frontier_vs_xi.png",
            "frontier_vs_xi.csv"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    markdown = (tmp_path / "theory_agreement.md").read_text()
    assert "tanh" in markdown and "**no**" in markdown and "Provenance" in markdown
    table = pd.read_csv(tmp_path / "theory_agreement.csv")
    assert len(table) == 5 and "measured" in table


def test_theory_report_without_a_theory_study_writes_nothing_of_it(tmp_path):
    paths = report.theory_report([make_record(study="other")], tmp_path, formats=("png",))
    assert paths == []


def test_the_theory_report_does_not_import_jax():
    code = ("import sys, vgbench.report.theory, vgbench.report; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_theory_report_reads_a_results_directory(records, tmp_path):
    from vgbench.report.frames import load_frames
    from vgbench.report.synthetic import write_records

    write_records(tmp_path / "results", records + [make_record(study="other")])
    frames = load_frames(tmp_path / "results")
    paths = report.theory_report(tmp_path / "results", tmp_path / "out", frames=frames,
                                 formats=("png",))
    assert (tmp_path / "out" / "theory_jacobian_spectra.png") in paths
    assert (tmp_path / "out" / "theory_agreement.csv") in paths


def test_build_report_includes_the_theory_outputs(records, tmp_path):
    from vgbench.report import build_report
    from vgbench.report.synthetic import write_records

    write_records(tmp_path, records)
    paths = build_report(tmp_path, formats=("png",), workers=1)
    assert tmp_path / "theory" / "theory_agreement.md" in paths
    assert "theory_agreement" in (tmp_path / "README.md").read_text()


def test_a_plugin_activation_and_initializer_reach_the_theory_table_and_figures(tmp_path):
    # neither is known to vgbench.theory by name: the record carries the activation tabulated
    # and the initializer's effective variances from its own mean_field
    import jax
    import jax.numpy as jnp

    from vgbench import activations, inits

    def scaled_tanh(x):
        """2 tanh(x/2) (a test activation)."""
        return 2.0 * jnp.tanh(x / 2.0)

    def wide(key, shape, fan_in, fan_out, hp):
        """Gaussian of variance 1.5/fan_in (a test initializer)."""
        return jnp.sqrt(1.5 / fan_in) * jax.random.normal(key, shape)

    exact = theory.Phi(lambda x: 2.0 * np.tanh(x / 2.0), lambda x: 1.0 / np.cosh(x / 2.0) ** 2)
    activations.register_activation("test_scaled_tanh", scaled_tanh)
    inits.register_initializer("test_wide", wide, mean_field=lambda hp, fi, fo: (1.5, 0.0))
    try:
        plugin = theory_record("test_scaled_tanh", 1.5, 0.0, init="test_wide", phi=exact)
        assert plugin["theory"]["sigma_w2"] == 1.5 and "phi" in plugin["theory"]
        assert plugin["theory"]["initializers"]["test_wide"] == [1.5, 0.0]
        others = [theory_record("tanh", 2.0, 0.0025)]
    finally:
        activations.ACTIVATIONS.unregister("test_scaled_tanh")
        inits.INITIALIZERS.unregister("test_wide")
    # the reporter needs neither entry registered: the record says it all
    records = [plugin, *others]
    table = report.agreement_table(*frames_of(records)).set_index("activation")
    row = table.loc["test_scaled_tanh"]
    chi1 = theory.chi1(exact, 1.5, 0.0)
    assert row["sigma_w2"] == 1.5 and row["chi1"] == pytest.approx(chi1, rel=2e-3)
    assert row["predicted"] == pytest.approx(0.5 * math.log10(chi1), abs=2e-4)
    assert row["agrees"] and row["measured"] == pytest.approx(row["predicted"], abs=2e-3)
    figure = theory_phase_figure(table.reset_index(), report.theory_inputs(records),
                                 activation_of=report.activation_of)
    titles = {ax.get_title() for ax in figure.axes}
    labels = {t for ax in figure.axes for t in ax.get_legend_handles_labels()[1]}
    assert "test_scaled_tanh" in titles and any("test_wide" in t for t in labels)
    paths = report.theory_report(records, tmp_path, formats=("png",))
    assert tmp_path / "theory_phase_diagram.png" in paths
    assert "test_scaled_tanh" in (tmp_path / "theory_agreement.md").read_text()

