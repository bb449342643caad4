"""The run config: validation with clear errors, and a stable run id."""

import pytest

from vgbench.spec import RunSpec


def test_defaults_validate_and_hash_stably():
    a, b = RunSpec(), RunSpec()
    assert a.run_id == b.run_id and len(a.run_id) == 16
    assert a.replace(depth=5).run_id != a.run_id
    assert a.replace(depth=5).replace(depth=a.depth).run_id == a.run_id


def test_run_id_is_a_pure_function_of_the_fields():
    # A tripwire: adding a config field or changing how ids are computed changes every run id,
    # so every stored record will be re-run. Update the constant only on purpose.
    spec = RunSpec(task="digits", model="mlp", depth=20, activation="sigmoid", init="naive")
    assert spec.run_id == RunSpec.from_dict(spec.to_dict()).run_id
    assert spec.run_id == "e39b2717f600d9ce", "run ids changed: stored records will not be reused"


@pytest.mark.parametrize("field,value,match", [
    ("activation", "sigmod", r"unknown activation 'sigmod'.*valid choices: sigmoid.*did you mean 'sigmoid'"),
    ("init", "he", r"unknown init 'he'.*he_normal"),
    ("norm", "bn", r"unknown norm 'bn'.*batchnorm"),
    ("optimizer", "adamw", r"unknown optimizer 'adamw'.*adam"),
    ("task", "mnist2", r"unknown task 'mnist2'"),
    ("model", "transformer", r"unknown model 'transformer'.*mlp"),
])
def test_unknown_names_list_valid_choices(field, value, match):
    with pytest.raises(ValueError, match=match):
        RunSpec(**{field: value})


@pytest.mark.parametrize("field,value", [
    ("depth", 2.5), ("depth", True), ("depth", "3"), ("lr", "0.1"), ("activation", 3),
    ("steps", None), ("sigma_w", [1.0]),
])
def test_wrong_types_are_rejected(field, value):
    with pytest.raises(TypeError, match=field):
        RunSpec(**{field: value})


@pytest.mark.parametrize("changes,match", [
    ({"depth": 0}, "depth"), ({"log_every": 0}, "log_every"),
    ({"lr": 0.0}, "lr"), ({"width": 0}, "width"), ({"lr": float("nan")}, "finite"),
    ({"model": "cnn", "depth": 4}, "odd"),
])
def test_out_of_range_values(changes, match):
    with pytest.raises(ValueError, match=match):
        RunSpec(**changes)


def test_ints_stand_for_floats_and_optional_fields_take_none():
    spec = RunSpec(lr=1, target=None)
    assert isinstance(spec.lr, float) and spec.target is None


def test_from_dict_names_the_place_and_the_unknown_key():
    with pytest.raises(ValueError, match=r"grid.toml \[fixed\]: unknown config field 'dpeth'.*did you mean 'depth'"):
        RunSpec.from_dict({"dpeth": 3}, where="grid.toml [fixed]")
    with pytest.raises(TypeError, match=r"row 3: depth must be int"):
        RunSpec.from_dict({"depth": "deep"}, where="row 3")


def test_log_points():
    assert RunSpec(steps=0, log_every=5).log_points == 1
    assert RunSpec(steps=100, log_every=25).log_points == 5
    assert RunSpec(steps=100, log_every=25).log_steps == [0, 25, 50, 75, 100]


@pytest.mark.parametrize("steps,log_every,expected", [
    (30, 25, [0, 25, 30]), (5, 25, [0, 5]), (7, 3, [0, 3, 6, 7]), (1, 1, [0, 1])])
def test_any_step_count_trains_and_its_last_log_point_is_the_end(steps, log_every, expected):
    spec = RunSpec(steps=steps, log_every=log_every)
    assert spec.log_steps == expected and spec.log_points == len(expected)


def test_one_home_for_the_run_id_the_defaults_and_the_seeds():
    # the synthetic records the reporter's tests use hash and default exactly like RunSpec
    from vgbench import cli, grid
    from vgbench.report.synthetic import make_record
    from vgbench.spec import field_defaults, run_id_of, seeds_from

    spec = RunSpec(depth=7, activation="tanh", steps=30, log_every=25)
    assert run_id_of(spec.to_dict()) == spec.run_id
    assert make_record(depth=7, activation="tanh", steps=30, log_every=25)["run_id"] == spec.run_id
    assert make_record(steps=30, log_every=25)["diagnostics"]["steps"] == spec.log_steps
    assert field_defaults() == RunSpec().to_dict()
    # seeds: the command line and grid files read them with one rule
    assert cli.parse_seeds("3") == list(seeds_from(3)) == [0, 1, 2]
    assert cli.parse_seeds("0,5,9") == list(seeds_from([0, 5, 9]))
    for bad_text, bad_value in [("1,1", [1, 1]), ("0", 0)]:
        with pytest.raises(Exception, match="distinct"):
            cli.parse_seeds(bad_text)
        with pytest.raises(ValueError, match="distinct integers"):
            seeds_from(bad_value)
        with pytest.raises(grid.GridError, match="study.seeds: expected a count"):
            grid._parse_seeds(bad_value, "g.toml")


def test_a_config_takes_its_models_defaults_through_the_resolver():
    # spec is a leaf: the resolver that vgbench.configs installs brings the registries in
    from vgbench import configs, spec

    assert spec._RESOLVER.model_defaults is configs.model_defaults
    assert RunSpec.defaults("rnn")["task"] == "adding" == RunSpec(model="rnn").task


# ---------------------------------------------------------------------------- ids and new fields

# ids the code gave before run ids became robust to new fields; one is a stored reference record's
KNOWN_IDS = [
    ({}, "cb35236a89a98a6d"),
    ({"model": "rnn"}, "4f9411f685aedac4"),
    ({"model": "cnn", "depth": 5}, "dc8006dfe90058c5"),
    ({"model": "rnn", "cell": "lstm", "task": "seq_digits"}, "2174cda845a97ca5"),
    ({"activation": "elu", "lr": 0.01}, "8d9ab6a11fc8d7e5"),
]
STORED_RECORD = {   # results/runs/0bff836a1acccda2.json of the recurrent study (reference run)
    "run_id": "0bff836a1acccda2",
    "config": {"task": "adding", "model": "rnn", "depth": 1, "width": 32, "activation": "tanh",
               "init": "xavier_normal", "sigma_w": 1.0, "sigma_b": 0.0, "leaky_slope": 0.01,
               "norm": "none", "skip": "none", "cell": "lstm", "recurrent_init": "orthogonal",
               "forget_bias": 1.0, "seq_len": 200, "input_dim": 64, "input_scale": 1.0,
               "optimizer": "adam", "lr": 0.1, "clip": "global_norm", "clip_threshold": 1.0,
               "steps": 1000, "batch_size": 32, "log_every": 50, "target": None,
               "data_dir": None, "plugin_hash": None},
}


@pytest.mark.parametrize("given,run_id", KNOWN_IDS)
def test_known_configs_keep_their_ids(given, run_id):
    assert RunSpec(**given).run_id == run_id


def test_a_stored_record_keeps_its_id():
    from vgbench.spec import ID_FIELDS_V1, field_names, run_id_of

    assert tuple(STORED_RECORD["config"]) == ID_FIELDS_V1   # the fields when it was made
    assert set(ID_FIELDS_V1) <= set(field_names())          # none is ever removed
    assert run_id_of(STORED_RECORD["config"]) == STORED_RECORD["run_id"]
    assert RunSpec.from_record(STORED_RECORD).run_id == STORED_RECORD["run_id"]


def spec_with_a_new_field(monkeypatch, default):
    """vgbench.spec as it would be with one more field, ``new_knob``, added with ``default``."""
    import sys
    import types
    from pathlib import Path

    from vgbench import spec

    source = Path(spec.__file__).read_text()
    last = "    plugin_hash: str | None = field("
    assert source.count(last) == 1
    source = source.replace(last, f"    new_knob: float = _field({default!r}, 'added later')\n{last}")
    module = types.ModuleType("vgbench_spec_with_new_knob")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(source, "spec_with_new_knob.py", "exec"), module.__dict__)  # noqa: S102  (our own source)
    module.set_resolver(spec._RESOLVER)   # the same registries: model defaults, names, plugins
    return module


def test_a_new_field_at_its_default_leaves_every_id_and_another_value_changes_it(monkeypatch):
    later = spec_with_a_new_field(monkeypatch, 0.5)
    assert "new_knob" in later.field_names() and "new_knob" not in later.ID_FIELDS_V1
    for given, run_id in KNOWN_IDS:
        assert later.RunSpec(**given).run_id == run_id
        assert later.RunSpec(**given, new_knob=0.5).run_id == run_id
        assert later.RunSpec(**given, new_knob=0.7).run_id != run_id
    assert later.RunSpec(new_knob=0.7).run_id != later.RunSpec(new_knob=0.8).run_id
    # a stored record made before the field existed is read with the field at its default
    old = later.RunSpec.from_record(STORED_RECORD)
    assert old.new_knob == 0.5 and old.run_id == STORED_RECORD["run_id"]
    assert later.RunSpec.from_dict(STORED_RECORD["config"]).run_id == STORED_RECORD["run_id"]
    # every field of the first id set stays hashed at its default too: those ids stay as made
    assert later.run_id_of({"depth": 4}) != later.run_id_of({})


def test_the_store_finds_a_record_made_before_a_field_was_added(monkeypatch, tmp_path):
    from vgbench import store as store_mod
    from vgbench.record import write_json_atomic

    later = spec_with_a_new_field(monkeypatch, 0.5)
    monkeypatch.setattr(store_mod, "id_config", later.id_config)
    store = store_mod.Store(tmp_path)
    old = dict(STORED_RECORD, schema="vgbench.run/1", seeds=[0], status=["ok"], metrics={},
               diagnostics={"steps": [0]}, summary={})
    write_json_atomic(store.path(old["run_id"]), old)
    now = later.RunSpec.from_dict(STORED_RECORD["config"])
    assert now.run_id == old["run_id"] and "new_knob" in now.to_dict()
    assert store.check(now.run_id, now.to_dict(), [0]).state == "done"
    changed = now.replace(new_knob=0.7)
    assert store.check(now.run_id, changed.to_dict(), [0]).state == "corrupt"


def test_the_reporter_reads_a_record_without_a_later_field_as_at_its_default(monkeypatch, tmp_path):
    from vgbench.record import write_json_atomic
    from vgbench.report import records as records_mod

    later = spec_with_a_new_field(monkeypatch, 0.5)
    monkeypatch.setattr(records_mod, "stored_config", later.stored_config)
    old = dict(STORED_RECORD, schema="vgbench.run/1", seeds=[0], status=["ok"], metrics={},
               diagnostics={"steps": [0]}, summary={})
    write_json_atomic(tmp_path / "runs" / f"{old['run_id']}.json", old)
    (record,), problems = records_mod.load_records(tmp_path)
    assert not problems and record["config"]["new_knob"] == 0.5


# ---------------------------------------------------------------------------- entry options

def test_an_entry_option_is_part_of_the_name_and_of_the_id():
    plain = RunSpec(activation="elu")
    assert plain.run_id == RunSpec(activation="elu(alpha=1.0)").run_id == RunSpec(
        activation="elu(alpha=1)").run_id                       # at its default: the bare name
    assert RunSpec(activation="elu(alpha=1.0)").activation == "elu"
    half = RunSpec(activation="elu( alpha = .5 )")
    assert half.activation == "elu(alpha=0.5)" and half.run_id != plain.run_id
    assert RunSpec.from_dict(half.to_dict()).run_id == half.run_id


@pytest.mark.parametrize("name,error,match", [
    ("elu(alfa=0.5)", ValueError, (r"activation 'elu\(alfa=0.5\)': unknown option 'alfa'; elu's "
                                   r"options \(at their defaults\): alpha=1.0; did you mean 'alpha'")),
    ("elu(alpha='big')", TypeError, r"activation .*: option alpha must be float, got str 'big'"),
    ("elu(alpha=True)", TypeError, r"option alpha must be float, got bool"),
    ("elu(0.5)", ValueError, r"options are given by name; write elu\(alpha=1.0\)"),
    ("elu(alpha=0.5", ValueError, r"cannot read its options"),
    ("relu(alpha=0.5)", ValueError, r"activation 'relu\(alpha=0.5\)': relu takes no options"),
    ("elx(alpha=0.5)", ValueError, (r"unknown activation 'elx\(alpha=0.5\)'; valid choices: .*"
                                    r"did you mean 'elu'")),
])
def test_a_bad_option_is_one_error_naming_the_field_and_the_choices(name, error, match):
    with pytest.raises(error, match=match):
        RunSpec(activation=name)
    with pytest.raises(error, match=r"grid.toml \[fixed\]: "):
        RunSpec.from_dict({"activation": name}, where="grid.toml [fixed]")
