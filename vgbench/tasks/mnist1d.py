"""MNIST-1D: ten one-dimensional digit templates, procedurally distorted (Greydanus & Kobak 2024).

The data come from the ``mnist1d`` package's generator, ``mnist1d.data.make_dataset``, with
its default arguments (:data:`GENERATOR_ARGS`): 5,000 signals of length 40, the first 4,000
for training and the last 1,000 for testing, globally centred and scaled to unit standard
deviation by the generator. With these arguments the generator reproduces the frozen
``mnist1d_data.pkl`` of the paper to float64 rounding (largest difference 9e-16). The
package's download path (``get_dataset``) is never called: nothing leaves the machine.

``mnist1d_shuffled`` is the same generator with ``shuffle_seq=True``: the same signals, their
40 positions in one fixed random order, which removes the spatial structure a convolution or a
recurrence can use (the paper's "shuffle" row, after Zhang et al. 2017).

Splits are fixed and independent of the run's seed: the package's 4,000 training signals
lose a fixed 10 % (400) to validation, leaving 3,600 for training; the package's 1,000 test
signals are the test split. Ten per cent rather than the suite's usual twenty keeps the
training set within 10 % of the paper's, whose published accuracies the task is read against;
400 signals still tell learning rates apart that differ by a few points of accuracy.

The data are generated once per process per argument set (about a second) and kept in memory.
Each task states its generator, package version and arguments in :attr:`Task.info`, which the
run record stores as ``task_info``.
"""

from __future__ import annotations

import difflib
import functools
import random
from importlib import metadata
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vgbench.tasks.base import Task, classification_metrics, register_task, softmax_xent

# mnist1d.data.get_dataset_args() of mnist1d 0.0.2.post1, less its download URL
GENERATOR_ARGS: dict[str, Any] = {
    "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": (36, 60),
    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25,
    "iid_noise_scale": 0.02, "shear_scale": 0.75, "shuffle_seq": False,
    "final_seq_length": 40, "seed": 42,
}
VAL_FRACTION = 0.1         # of the package's training signals, held out for validation
MNIST1D_TARGET = 0.5       # above any linear classifier (32 %), below the paper's MLP (68 %)
CLASSES = 10


def generator_args(**overrides) -> dict[str, Any]:
    """The generator's default arguments with ``overrides``, checked: one clear error if bad."""
    unknown = sorted(set(overrides) - set(GENERATOR_ARGS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], GENERATOR_ARGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"mnist1d generator: unknown argument {unknown[0]!r}{hint}; valid "
                         f"arguments: {', '.join(GENERATOR_ARGS)} (the download URL is not one: "
                         f"the data are always generated)")
    args = {**GENERATOR_ARGS, **overrides}
    problems = []

    def need(ok: bool, what: str):
        if not ok:
            problems.append(what)

    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_real(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    for key in ("num_samples", "template_len", "max_translation", "final_seq_length", "seed"):
        need(is_int(args[key]), f"{key} must be an int, got {args[key]!r}")
    for key in ("train_split", "scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
        need(is_real(args[key]), f"{key} must be a number, got {args[key]!r}")
    need(isinstance(args["shuffle_seq"], (bool, np.bool_)),
         f"shuffle_seq must be true or false, got {args['shuffle_seq']!r}")
    pad = args["padding"]
    need(isinstance(pad, (list, tuple)) and len(pad) == 2 and all(is_int(p) for p in pad)
         and 0 <= pad[0] <= pad[1], f"padding must be two ints 0 <= low <= high, got {pad!r}")
    if not problems:
        need(args["num_samples"] >= 2 * CLASSES,
             f"num_samples must be at least {2 * CLASSES}, got {args['num_samples']}")
        need(0 < args["train_split"] < 1, f"train_split must be in (0, 1), got {args['train_split']}")
        need(args["template_len"] >= 2, f"template_len must be >= 2, got {args['template_len']}")
        need(args["final_seq_length"] >= 2,
             f"final_seq_length must be >= 2, got {args['final_seq_length']}")
        need(args["max_translation"] >= 1, f"max_translation must be >= 1, got {args['max_translation']}")
        for key in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
            need(args[key] >= 0, f"{key} must be >= 0, got {args[key]}")
        need(args["seed"] >= 0, f"seed must be >= 0, got {args['seed']}")
    if problems:
        raise ValueError("mnist1d generator: " + "; ".join(problems))
    args["padding"] = tuple(int(p) for p in pad)
    return args


def generate(**overrides) -> dict[str, np.ndarray]:
    """{"x", "y", "x_test", "y_test"} from ``mnist1d.data.make_dataset`` (read-only, cached).

    ``overrides`` change :data:`GENERATOR_ARGS` (checked by :func:`generator_args`). ``x`` is
    float32 ``[n, final_seq_length]``, ``y`` int32.
    """
    args = generator_args(**overrides)
    return _generate(tuple(sorted(args.items())))


@functools.lru_cache(maxsize=8)
def _generate(items: tuple) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    args = dict(items)
    args["padding"] = list(args["padding"])
    # make_dataset seeds numpy's and Python's global generators: leave them as they were
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = {"x": data["x"].astype(np.float32), "y": data["y"].astype(np.int32),
           "x_test": data["x_test"].astype(np.float32), "y_test": data["y_test"].astype(np.int32)}
    for array in out.values():
        array.flags.writeable = False
    return out


def package_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        return "unknown"


def _mnist1d_task(name: str, spec, shuffle_seq: bool) -> Task:
    from vgbench.tasks.classification import _label_entropy, carve_validation

    args = generator_args(shuffle_seq=shuffle_seq)
    data = generate(shuffle_seq=shuffle_seq)
    keep, held = carve_validation(len(data["y"]), fraction=VAL_FRACTION)
    shape = (args["final_seq_length"], 1)   # a one-channel signal (an MLP views it flat)
    scale = np.float32(spec.input_scale)

    def split(x, y):
        return (scale * x).reshape((-1, *shape)), np.asarray(y)

    (x_train, y_train), (x_val, y_val) = (split(data["x"][i], data["y"][i]) for i in (keep, held))
    x_test, y_test = split(data["x_test"], data["y_test"])
    train_x, train_y = jnp.asarray(x_train), jnp.asarray(y_train)
    n = len(y_train)

    def sample(key, batch_size):
        idx = jax.random.randint(key, (batch_size,), 0, n)
        return train_x[idx], train_y[idx]

    info = {"generator": "mnist1d.data.make_dataset", "package": f"mnist1d {package_version()}",
            "args": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()},
            "split": {"train": n, "val": len(y_val), "test": len(y_test),
                      "val_fraction": VAL_FRACTION}}
    return Task(name=name, input_shape=shape, output_dim=CLASSES, sample=sample,
                loss=softmax_xent, metrics=classification_metrics,
                eval_train=(x_train, y_train), eval_val=(x_val, y_val), eval_test=(x_test, y_test),
                baseline=_label_entropy(y_train, CLASSES), target_metric="accuracy",
                target=MNIST1D_TARGET, higher_is_better=True, info=info)


def mnist1d(spec) -> Task:
    """MNIST-1D: 1-D digit templates, scaled, shifted, sheared and noised, length 40 (Greydanus & Kobak 2024)."""
    return _mnist1d_task("mnist1d", spec, shuffle_seq=False)


def mnist1d_shuffled(spec) -> Task:
    """MNIST-1D with its 40 positions in one fixed random order: no spatial structure left (Greydanus & Kobak 2024)."""
    return _mnist1d_task("mnist1d_shuffled", spec, shuffle_seq=True)


for _make in (mnist1d, mnist1d_shuffled):
    register_task(_make.__name__, _make)
