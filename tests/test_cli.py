"""The command line: one run end to end, listings, and bad input that writes nothing."""

import json

import pytest

from vgbench.cli import main

TINY = ["--depth", "3", "--width", "8", "--batch-size", "16", "--steps", "4", "--log-every", "2"]


def test_train_prints_a_summary_and_writes_the_record(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", *TINY, "--activation", "sigmoid", "--init", "naive", "--seeds", "2",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "log10_att_init" in text and "target reached by" in text
    rec = json.loads(out.read_text())
    assert rec["config"]["activation"] == "sigmoid" and rec["seeds"] == [0, 1]
    assert rec["study"] == "adhoc"


def test_train_takes_an_entry_with_options(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["train", *TINY, "--steps", "0", "--activation", "elu(alpha=0.5)",
                 "--out", str(out)]) == 0
    assert "activation=elu(alpha=0.5)" in capsys.readouterr().out
    assert json.loads(out.read_text())["config"]["activation"] == "elu(alpha=0.5)"


def test_help_gives_each_flag_its_meaning_and_each_registry_field_its_names(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())   # argparse wraps lines
    assert "--activation STR the nonlinearity of every hidden layer; default: 'relu'" in text
    assert "one of: sigmoid, tanh, relu, leaky_relu" in text
    assert "prelu, elu(alpha=1.0), selu" in text   # an entry's options, at their defaults
    assert "--recurrent-init STR initializer of the recurrent weights" in text
    assert "--cell STR the recurrent cell (recurrent models only); default: 'rnn'; one of: rnn, irnn, lstm, gru" in text
    assert "--depth INT number of layers" in text and "(cnn: 5, rnn: 1)" in text
    assert "--seeds SEEDS a count" in text
    from vgbench.spec import field_names

    for name in field_names():
        if name != "plugin_hash":
            assert f"--{name.replace('_', '-')} " in text, name


@pytest.mark.parametrize("argv,message", [
    (["train", "--activation", "Relu"], "did you mean 'relu'"),
    (["list", "Init"], "did you mean 'init'"),
    (["train", "--activation", "sigmod"], "did you mean 'sigmoid'"),
    (["train", "--steps", "-1"], "steps must be >= 0"),
    (["train", "--task", "mnist"], "--data-dir"),
    (["list", "activations"], "did you mean 'activation'"),
    (["train", "--activation", "elu(alfa=0.5)"], "did you mean 'alpha'"),
])
def test_bad_input_gets_one_clear_error_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "run.json"
    extra = ["--out", str(out)] if argv[0] == "train" else []
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_wrong_flag_types_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--depth", "2.5"])
    assert exc.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_seeds_accept_a_count_or_a_list(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["train", *TINY, "--seeds", "4,9", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["seeds"] == [4, 9]
    with pytest.raises(SystemExit):
        main(["train", "--seeds", "0"])


def test_list_prints_every_axis_with_one_line_docs(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for axis in ("activation:", "init:", "norm:", "skip:", "optimizer:", "clip:", "model:", "task:"):
        assert axis in text
    assert "Glorot & Bengio 2010" in text and "He et al. 2015" in text
    assert "\n  elu(alpha=1.0) " in text   # an entry's options, at their defaults


def test_a_model_fills_in_the_fields_it_needs_that_the_flags_leave_out(tmp_path, capsys):
    # --model rnn alone: the recurrent study's vanilla RNN on adding (digits has no sequences)
    out = tmp_path / "rnn.json"
    assert main(["train", "--model", "rnn", "--width", "8", "--seq-len", "10", "--steps", "0",
                 "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["task"], cfg["depth"], cfg["activation"], cfg["init"]) == ("adding", 1, "tanh",
                                                                          "xavier_normal")
    # a flag that is given wins over the model's default
    assert main(["train", "--model", "rnn", "--task", "copy", "--activation", "relu", "--width", "8",
                 "--seq-len", "10", "--steps", "0", "--out", str(out)]) == 0
    cfg = json.loads(out.read_text())["config"]
    assert (cfg["task"], cfg["activation"], cfg["depth"]) == ("copy", "relu", 1)
    # the CNN's depth must be odd (stem + two convolutions per block): 5 unless given
    assert main(["train", "--model", "cnn", "--width", "4", "--steps", "0", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["config"]["depth"] == 5
    capsys.readouterr()


def test_a_registered_model_checks_its_defaults():
    from vgbench import models

    with pytest.raises(TypeError, match="defaults must be a dict"):
        models.register_model("odd", lambda spec, task: None, defaults=["task"])
    assert "odd" not in models.MODELS.names()
    with pytest.raises(ValueError, match="did you mean 'rnn'"):
        models.model_defaults("rnx")


def test_models_own_their_facts(monkeypatch):
    from vgbench import models, tasks
    from vgbench.executors import Batch
    from vgbench.grid import Run
    from vgbench.spec import RunSpec

    with pytest.raises(ValueError, match="input_layout must be one of flat, channels"):
        models.register_model("odd", lambda spec, task: None, input_layout="image")
    with pytest.raises(ValueError, match="'dpeth' is not a config field"):
        models.register_model("odd", lambda spec, task: None, defaults={"dpeth": 3})
    assert "odd" not in models.MODELS.names()
    # a task gives its natural shape whatever the model; the model's layout is how it views it
    assert tasks.make(RunSpec(model="cnn")).input_shape == (8, 8, 1)
    assert tasks.make(RunSpec(model="mlp")).input_shape == (8, 8, 1)
    assert models.laid_out((8, 8, 1), "flat", "here") == (64,)
    assert models.laid_out((8, 8, 1), "channels", "here") == (8, 8, 1)
    assert models.laid_out((16,), "channels", "here") == (4, 4, 1)
    with pytest.raises(ValueError, match="here: a model with channels-last inputs.*got \\(15,\\)"):
        models.laid_out((15,), "channels", "here")
    models.register_model("test_channels", models.MODELS.get("cnn"), input_layout="channels",
                          defaults={"depth": 3}, describe=("width", "norm"),
                          cost=lambda spec: 0.5, doc="A CNN under another name (a test entry).")
    try:
        spec = RunSpec(model="test_channels", width=4, steps=10)
        assert spec.depth == 3 and tasks.make(spec).input_shape == (8, 8, 1)
        assert models.describe(spec) == "width=4 norm=none"
        batch = Batch(index=0, study="s", meta={}, runs=(Run(spec=spec, seeds=(0, 1), grid_axes={}),))
        assert batch.cost == pytest.approx(4.0 + 2 * 10 * 0.5)
        assert "width=4 norm=none [1 runs x 2 seeds]" in batch.describe()
    finally:
        models.MODELS.unregister("test_channels")
    # the built-ins: an rnn summary names its cell and length; its cost grows with T
    rnn = RunSpec(model="rnn", cell="gru", seq_len=50)
    assert models.describe(rnn) == "cell=gru seq_len=50"
    assert models.step_cost(rnn.replace(seq_len=100)) == pytest.approx(2 * models.step_cost(rnn))
    assert models.describe(RunSpec()) == ""
