"""Plugins end to end: a new entry in a temporary directory flows through grid, runner and reporter.

These tests run ``vgbench`` in subprocesses: a plugin's registrations are process-wide, and a
fresh process is what a user's run is.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PLUGIN = '''
import jax.numpy as jnp
import vgbench


def softcube(x):
    """Soft cube-root-like squashing x / (1 + x^2)^(1/3) (a test entry)."""
    return x / (1.0 + x * x) ** (1.0 / 3.0)


vgbench.register_activation("softcube", softcube, derivative_max=1.0)
'''

GRID = '''
[study]
name = "plugin_e2e"
seeds = 2
plugins = ["plugins/softcube.py"]

[fixed]
task = "digits"
width = 8
batch_size = 16
steps = 10
log_every = 5
init = "xavier_normal"

[axes]
depth = [2, 4]
activation = ["tanh", "softcube"]
'''


def vgbench(*args, cwd, check=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "vgbench.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vgbench {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def records(results: Path) -> dict:
    """run_id -> (activation, depth, plugin_hash, created) of every record."""
    out = {}
    for path in sorted((results / "runs").glob("*.json")):
        rec = json.loads(path.read_text())
        cfg = rec["config"]
        out[rec["run_id"]] = (cfg["activation"], cfg["depth"], cfg["plugin_hash"], rec["created"])
    return out


@pytest.mark.slow
def test_a_new_activation_plugin_flows_into_leaderboard_and_figures(tmp_path):
    (tmp_path / "plugins").mkdir()
    plugin = tmp_path / "plugins" / "softcube.py"
    plugin.write_text(PLUGIN)
    grid = tmp_path / "study.toml"
    grid.write_text(GRID)
    results = tmp_path / "results"

    vgbench("run", str(grid), "--results", str(results), "--no-progress", cwd=tmp_path)
    first = records(results)
    assert sorted(v[:2] for v in first.values()) == [("softcube", 2), ("softcube", 4),
                                                      ("tanh", 2), ("tanh", 4)]
    assert all((v[2] is None) == (v[0] == "tanh") for v in first.values())

    vgbench("report", "--results", str(results), cwd=tmp_path)
    board = pd.read_csv(results / "leaderboards" / "plugin_e2e.csv")
    assert board.astype(str).apply(lambda col: col.str.contains("softcube")).any(axis=1).sum() >= 1
    stats = pd.read_csv(results / "grad_stats.csv").merge(
        pd.read_csv(results / "runs.csv")[["run_id", "activation"]].drop_duplicates(), on="run_id")
    assert set(stats.loc[stats["study"] == "plugin_e2e", "activation"]) == {"tanh", "softcube"}
    figures = list((results / "figures" / "plugin_e2e").glob("*.png"))
    assert figures, "no figures for the study"

    # the figure's data: the classic gradient-vs-layer plot has one line per activation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from vgbench.report import figures as fig_mod
    from vgbench.report import frames

    loaded = frames.load_frames(results)
    frame = frames.with_runs(loaded.grad_stats, loaded.runs, columns=["entry", "depth"])
    one_depth = frame[(frame["study"] == "plugin_e2e") & (frame["depth"] == 4)]
    ax = fig_mod.plot_grad_vs_layer(one_depth)
    labels = {t.get_text() for t in ax.get_legend().get_texts()} if ax.get_legend() else set()
    labels |= {line.get_label() for line in ax.get_lines()}
    assert any("softcube" in label for label in labels), labels

    # editing the plugin re-runs exactly its configs
    plugin.write_text(PLUGIN.replace("1.0 / 3.0", "0.5"))
    vgbench("run", str(grid), "--results", str(results), "--no-progress", cwd=tmp_path)
    second = records(results)
    assert {k: v for k, v in second.items() if k in first} == first   # nothing else was rewritten
    new = sorted(v[:2] for k, v in second.items() if k not in first)
    assert new == [("softcube", 2), ("softcube", 4)]


@pytest.mark.parametrize("body,message", [
    (None, "does not exist"),
    ("import not_a_module_anywhere\n", "failed to import: ModuleNotFoundError"),
    ("import vgbench\n\ndef relu(x):\n    '''Clash.'''\n    return x\n\nvgbench.register_activation('relu', relu)\n",
     "already registered"),
    ("import vgbench\nvgbench.register_activation('notfn', 3)\n", "must be callable"),
])
def test_bad_plugins_get_one_error_naming_the_plugin_and_nothing_runs(tmp_path, body, message):
    (tmp_path / "plugins").mkdir()
    if body is not None:
        (tmp_path / "plugins" / "softcube.py").write_text(body)
    grid = tmp_path / "study.toml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    proc = vgbench("run", str(grid), "--results", str(results), "--no-progress", cwd=tmp_path,
                   check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "softcube.py" in proc.stderr
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.json"))


def test_a_plugin_imports_the_modules_beside_it_and_its_hash_covers_them(tmp_path):
    """A plugin that imports a module from its own folder: importable, and that module's
    source is part of the plugin's hash (a change to it re-runs the plugin's configs)."""
    import hashlib

    from vgbench import plugins

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    folder = tmp_path / "models"
    folder.mkdir()
    helper = folder / "plugin_local_layers.py"
    helper.write_text("SCALE = 3\n")
    entry = folder / "entry.py"
    entry.write_text("from plugin_local_layers import SCALE\nassert SCALE == 3\n")
    digest = plugins.load_one(str(entry))
    own = sha(entry.read_bytes())
    assert digest == sha(f"{own}\nplugin_local_layers.py:{sha(helper.read_bytes())}".encode())
    # a plugin that imports nothing beside it keeps the hash of its own source
    lone = tmp_path / "lone.py"
    lone.write_text("import math\n")
    assert plugins.load_one(str(lone)) == sha(lone.read_bytes())


def test_a_flax_entry_hash_covers_the_adapter_that_probes_it(tmp_path):
    """A change to how vgbench adapts a flax network is a change to the entry's runs."""
    import hashlib
    import sys

    from vgbench import models, plugins
    from vgbench.spec import RunSpec

    plugin = tmp_path / "flax_entry.py"
    plugin.write_text(
        "import flax.linen as nn\nimport vgbench\n\n"
        "def make(spec, task):\n    '''A one-layer flax net (test entry).'''\n"
        "    return nn.Dense(task.output_dim)\n\n"
        "vgbench.register_flax_model('test_hashed_flax', make)\n")
    try:
        own = plugins.load_one(str(plugin))
        adapter = Path(sys.modules["vgbench.models.flax_adapter"].__file__).read_bytes()
        expected = hashlib.sha256("".join(sorted(
            [own, hashlib.sha256(adapter).hexdigest()])).encode()).hexdigest()[:16]
        assert plugins.hash_for(RunSpec(model="test_hashed_flax", task="digits")) == expected
    finally:
        models.MODELS.unregister("test_hashed_flax")
