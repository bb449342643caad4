"""vgbench diagnose and the per-layer table for one's own training loop."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vgbench import cli, diagnose, models, tasks
from vgbench.spec import RunSpec

sys.path.insert(0, str(Path(__file__).parent))
from test_flax_adapter import FlaxMLP, builtin_to_flax  # noqa: E402


def test_diagnose_prints_the_table_and_verdict_and_writes_record_and_figure(tmp_path, capsys):
    out = tmp_path / "sig.json"
    code = cli.main(["diagnose", "--model", "mlp", "--depth", "20", "--width", "32",
                     "--activation", "sigmoid", "--init", "naive", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "dense_1 " in text and "output" in text
    assert "seed 0: at init: vanishing" in text and "layers 1-" in text
    rec = json.loads(out.read_text())
    assert rec["config"]["steps"] == 0 and rec["diagnostics"]["steps"] == [0]
    assert rec["summary"]["verdict_init"] == ["vanishing"]
    assert (tmp_path / "sig.png").stat().st_size > 0 and (tmp_path / "sig.pdf").exists()


def test_diagnose_reads_your_own_arrays(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "batch.npz"
    np.savez(data, x=rng.normal(size=(24, 5)).astype(np.float32), y=rng.integers(0, 3, 24))
    out = tmp_path / "mine.json"
    code = cli.main(["diagnose", "--model", "mlp", "--depth", "3", "--width", "8",
                     "--data-dir", str(data), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rec = json.loads(out.read_text())
    assert rec["config"]["task"] == "npz" and rec["config"]["batch_size"] == 24
    assert rec["diagnostics"]["layer_names"] == ["dense_1", "dense_2", "dense_3", "output"]
    assert len(rec["diagnostics"]["delta_norm"][0][0]) == 4


def test_missing_model_is_one_clear_error(capsys):
    assert cli.main(["diagnose", "--task", "digits"]) == 2
    assert "--model is required" in capsys.readouterr().err


def test_flax_layer_table_matches_the_builtin_mlp_and_theory():
    spec = RunSpec(task="digits", model="mlp", depth=4, width=16, activation="tanh",
                   init="xavier_normal")
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state = model.init(jax.random.PRNGKey(0))
    x, y = task.sample(jax.random.PRNGKey(1), 32)
    builtin = diagnose.layer_table(model, params, state, x, y, task.loss)

    stacked = jax.tree_util.tree_map(lambda a: a[None], params)
    flax_params = jax.tree_util.tree_map(lambda a: a[0], builtin_to_flax(stacked, 4))
    module = FlaxMLP(4, 16, 10, jnp.tanh)
    x = x.reshape(len(x), -1)   # digits come as 8x8x1 images; this flax MLP takes vectors
    mine = diagnose.flax_layer_table(module, {"params": flax_params}, x, y, task.loss)
    assert list(mine["layer_name"]) == list(builtin["layer_name"])
    for col in ("delta_norm", "grad_norm", "weight_norm"):
        np.testing.assert_allclose(mine[col], builtin[col], rtol=1e-5, err_msg=col)

    # the output layer's signal is (softmax - onehot) / B per example, RMS over the batch
    logits = module.apply({"params": flax_params}, x)
    per_example = jax.nn.softmax(logits) - jax.nn.one_hot(y, 10)
    rms = np.sqrt(np.mean(np.sum(np.square(per_example), axis=1)))
    np.testing.assert_allclose(mine["delta_norm"].iloc[-1], rms, rtol=1e-5)
    assert diagnose.verdict_text(mine).startswith("verdict: ")


def test_train_output_has_one_verdict_line_per_seed(capsys):
    code = cli.main(["train", "--depth", "3", "--width", "8", "--steps", "10", "--log-every", "5",
                     "--seeds", "2", "--batch-size", "16"])
    text = capsys.readouterr().out
    assert code == 0
    assert text.count("seed 0: at init: ") == 1 and text.count("seed 1: at init: ") == 1
    assert "; at the end: " in text and "; symptoms: " in text


def test_diagnose_of_a_flax_plugin_prints_what_its_probes_cover(tmp_path, capsys):
    plugin = tmp_path / "normed.py"
    plugin.write_text(
        "import flax.linen as nn\nimport vgbench\n\n"
        "class Normed(nn.Module):\n    out: int\n\n    @nn.compact\n"
        "    def __call__(self, x):\n"
        "        return nn.Dense(self.out)(nn.LayerNorm()(nn.relu(nn.Dense(16)(x))))\n\n"
        "def make(spec, task):\n    '''Dense, LayerNorm, Dense (test entry).'''\n"
        "    return Normed(task.output_dim)\n\n"
        "vgbench.register_flax_model('test_diag_normed', make)\n")
    code = cli.main(["diagnose", "--plugin", str(plugin), "--model", "test_diag_normed",
                     "--task", "digits", "--out", str(tmp_path / "n.json")])
    text = capsys.readouterr().out
    assert code == 0
    assert "'test_diag_normed': 2 layers probed" in text and "LayerNorm_0" in text


def test_the_verdict_of_a_table_without_a_graph_names_only_its_exact_zeros():
    import pandas as pd

    table = pd.DataFrame({"layer": [1, 2, 3, 4], "layer_name": ["a", "b", "c", "d"],
                          "delta_norm": [0.5, 0.0, 0.8, 1.0]})
    text = diagnose.verdict_text(table)
    assert text.endswith("not vanishing: b")                 # b alone, once
    assert "exactly 0" not in diagnose.verdict_text(table.assign(delta_norm=[0.5, 0.6, 0.8, 1.0]))
