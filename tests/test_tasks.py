"""Classification tasks: digits split and baseline, teacher labels, the IDX reader."""

import gzip

import jax
import numpy as np
import pytest

from vgbench import tasks
from vgbench.spec import RunSpec
from vgbench.tasks.classification import read_idx, write_idx


def test_digits_is_a_fixed_split_of_the_bundled_images():
    task = tasks.make(RunSpec(task="digits"))
    (x_tr, _), (x_va, y_va), (x_te, y_te) = task.eval_train, task.eval_val, task.eval_test
    assert x_tr.shape == (1150, 8, 8, 1) and x_va.shape == (288, 8, 8, 1) and x_te.shape == (359, 8, 8, 1)
    assert set(np.unique(y_te)) == set(range(10)) == set(np.unique(y_va))
    again = tasks.make(RunSpec(task="digits", depth=7))
    np.testing.assert_array_equal(again.eval_test[1], y_te)       # split does not depend on the run
    np.testing.assert_array_equal(again.eval_val[1], y_va)
    assert task.baseline == pytest.approx(np.log(10), abs=0.01)   # near-balanced classes
    assert abs(x_tr.mean()) < 1e-5                                 # standardized with train stats


def test_digits_splits_are_disjoint_cover_the_images_and_keep_the_old_test_split():
    from vgbench.tasks.classification import SPLIT_SEED, digits_split

    x, y, train, val, test = digits_split()
    assert len(set(train) | set(val) | set(test)) == len(x) == len(train) + len(val) + len(test)
    # the test split is the one every earlier version of the suite used: the first 20 % of a
    # fixed permutation, so test numbers stay comparable
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    np.testing.assert_array_equal(test, order[:359])
    # no image of one split appears in another (digits has no exact duplicates across them)
    rows = [{r.tobytes() for r in x[idx]} for idx in (train, val, test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_teacher_validation_and_test_sets_differ():
    task = tasks.make(RunSpec(task="teacher", input_dim=16))
    sets = [np.asarray(s[0]) for s in (task.eval_train, task.eval_val, task.eval_test)]
    assert all(s.shape == (2048, 16) for s in sets)
    assert not np.allclose(sets[1], sets[2]) and not np.allclose(sets[0], sets[1])


def test_digits_as_images_for_cnns_and_batches_from_the_training_set():
    task = tasks.make(RunSpec(task="digits", model="cnn", depth=3))
    assert task.input_shape == (8, 8, 1)
    x, y = task.sample(jax.random.PRNGKey(0), 32)
    assert x.shape == (32, 8, 8, 1) and y.shape == (32,) and y.dtype == np.int32
    train_rows = {row.tobytes() for row in np.asarray(task.eval_train[0]).reshape(len(task.eval_train[0]), -1)}
    assert all(row.tobytes() in train_rows for row in np.asarray(x).reshape(32, -1))


def test_teacher_labels_come_from_the_teacher_and_scale_with_input_scale():
    task = tasks.make(RunSpec(task="teacher", input_dim=20, input_scale=2.0))
    x, y = task.sample(jax.random.PRNGKey(0), 4096)
    assert x.shape == (4096, 20)
    assert float(np.std(np.asarray(x))) == pytest.approx(2.0, rel=0.03)
    counts = np.bincount(np.asarray(y), minlength=10)
    assert (counts > 0).sum() >= 5     # several classes actually occur
    assert 0 < task.baseline <= np.log(10) + 1e-6


def write_idx_dataset(directory, n_train=60, n_test=20, gz=False):
    rng = np.random.default_rng(0)
    labels = {"train": rng.integers(0, 10, n_train), "test": rng.integers(0, 10, n_test)}
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 6)),
             "train-labels-idx1-ubyte": labels["train"],
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 6)),
             "t10k-labels-idx1-ubyte": labels["test"]}
    for name, array in files.items():
        path = directory / name
        write_idx(path, array)
        if gz:
            path.with_name(name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_round_trips(tmp_path, gz):
    files = write_idx_dataset(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(tmp_path / ("train-images-idx3-ubyte" + suffix))
    np.testing.assert_array_equal(images, files["train-images-idx3-ubyte"])
    task = tasks.make(RunSpec(task="mnist", data_dir=str(tmp_path)))
    assert task.input_shape == (6, 6, 1) and task.eval_test[0].shape == (20, 6, 6, 1)
    assert task.eval_val[0].shape == (5, 6, 6, 1) and task.eval_train[0].shape == (55, 6, 6, 1)  # 1/12 held out
    cnn = tasks.make(RunSpec(task="fashion_mnist", model="cnn", depth=3, data_dir=str(tmp_path)))
    assert cnn.input_shape == (6, 6, 1)


def test_idx_errors_name_the_file_and_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="--data-dir"):
        tasks.make(RunSpec(task="mnist"))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*never downloads"):
        tasks.make(RunSpec(task="mnist", data_dir=str(tmp_path)))
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((4, 3, 3)))
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(ValueError, match="promises"):
        read_idx(short)


def test_tasks_give_natural_shapes_and_each_model_views_them_in_its_own_layout():
    from vgbench import models

    digits = tasks.make(RunSpec(task="digits", model="mlp"))
    assert digits.input_shape == (8, 8, 1)        # the same task for every model
    x = np.asarray(digits.eval_test[0][:5])
    spec = RunSpec(task="digits", model="mlp", depth=2, width=8)
    mlp = models.make(spec, digits)
    params, state = mlp.init(jax.random.PRNGKey(0))
    out = mlp.apply(params, state, x, train=False)[0]
    # the MLP sees each image as its 64 pixels in row-major order
    flat = models.MODELS.get("mlp")(spec, digits._replace(input_shape=(64,)))
    np.testing.assert_array_equal(out, flat.apply(params, state, x.reshape(5, 64), train=False)[0])
    # a vector task on a channels-last model: a square length is an image, another is an error
    square = tasks.make(RunSpec(task="teacher", input_dim=16, model="cnn", depth=3))
    assert square.input_shape == (16,)
    cnn = models.make(RunSpec(task="teacher", input_dim=16, model="cnn", depth=3), square)
    params, state = cnn.init(jax.random.PRNGKey(0))
    assert cnn.apply(params, state, square.eval_test[0][:3], train=False)[0].shape == (3, square.output_dim)
    odd = RunSpec(task="teacher", input_dim=15, model="cnn", depth=3)
    with pytest.raises(ValueError, match="model 'cnn' on task 'teacher'.*square length"):
        models.make(odd, tasks.make(odd))
