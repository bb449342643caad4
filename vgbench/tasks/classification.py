"""Image and synthetic classification tasks: digits, teacher, and IDX files (mnist, fashion_mnist)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vgbench.tasks.base import Task, classification_metrics, register_task, softmax_xent

SPLIT_SEED = 0          # the train/validation/test split never depends on the run's seed
VAL_FRACTION = 0.2      # of the training part, held out as the validation split
DIGITS_TARGET = 0.90    # test accuracy a trainable network reaches on digits in a few hundred steps


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Per-feature z-scores with the training set's statistics; constant features become 0."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-6, std, np.inf)
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def _label_entropy(labels: np.ndarray, classes: int) -> float:
    """Cross-entropy of the input-blind predictor that outputs the class frequencies."""
    p = np.bincount(labels, minlength=classes) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def carve_validation(n_train: int, fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED):
    """(train_index, val_index) into a training part of ``n_train`` examples: a fixed random
    ``fraction`` becomes the validation split, the rest stays for training."""
    order = np.random.default_rng(seed + 1).permutation(n_train)
    n_val = int(round(fraction * n_train))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _array_task(name, spec, x_train, y_train, x_val, y_val, x_test, y_test, image_hw, classes,
                target, max_eval=4096):
    """A task that samples minibatches (with replacement) from fixed arrays."""
    x_train, x_val, x_test = (a * spec.input_scale for a in _standardize(x_train, x_val, x_test))
    shape = (*image_hw, 1)   # the natural shape: a one-channel image (models view it their way)
    x_train, x_val, x_test = (a.reshape((-1, *shape)) for a in (x_train, x_val, x_test))
    y_train, y_val, y_test = (a.astype(np.int32) for a in (y_train, y_val, y_test))
    train_x, train_y = jnp.asarray(x_train), jnp.asarray(y_train)
    n = len(x_train)

    def sample(key, batch_size):
        idx = jax.random.randint(key, (batch_size,), 0, n)
        return train_x[idx], train_y[idx]

    return Task(name=name, input_shape=shape, output_dim=classes, sample=sample,
                loss=softmax_xent, metrics=classification_metrics,
                eval_train=(x_train[:max_eval], y_train[:max_eval]),
                eval_val=(x_val[:max_eval], y_val[:max_eval]),
                eval_test=(x_test[:max_eval], y_test[:max_eval]),
                baseline=_label_entropy(y_train, classes), target_metric="accuracy",
                target=target, higher_is_better=True)


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, train_index, val_index, test_index): the bundled digits and their fixed split.

    The test split is a fixed 20 % (359 images); validation is a fixed 20 % of the rest (288),
    and 1,150 images remain for training.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(0.2 * len(x)))
    test, rest = order[:n_test], order[n_test:]
    keep, held = carve_validation(len(rest))
    return x, y, rest[keep], rest[held], test


def digits(spec) -> Task:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; Alpaydin & Kaynak 1998)."""
    x, y, train, val, test = digits_split()
    return _array_task("digits", spec, x[train], y[train], x[val], y[val], x[test], y[test],
                       (8, 8), 10, DIGITS_TARGET)


TEACHER_CLASSES = 10
TEACHER_HIDDEN = 64


def teacher(spec) -> Task:
    """Teacher-student classification: labels are the argmax of a fixed random tanh network (Gardner & Derrida 1989)."""
    d = spec.input_dim
    rng = np.random.default_rng(SPLIT_SEED)
    w1 = rng.normal(0, 1 / math.sqrt(d), (d, TEACHER_HIDDEN)).astype(np.float32)
    w2 = rng.normal(0, 1 / math.sqrt(TEACHER_HIDDEN), (TEACHER_HIDDEN, TEACHER_CLASSES)).astype(np.float32)
    shape = (d,)   # a vector; a channels-last model views a square one as an image
    w1_j, w2_j = jnp.asarray(w1), jnp.asarray(w2)
    scale = spec.input_scale

    def label(x_flat):
        return jnp.argmax(jnp.tanh(x_flat @ w1_j) @ w2_j, axis=-1).astype(jnp.int32)

    def sample(key, batch_size):
        x = jax.random.normal(key, (batch_size, d), jnp.float32)
        return (scale * x).reshape((batch_size, *shape)), label(x)

    def fixed(seed, n):
        x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
        y = np.argmax(np.tanh(x @ w1) @ w2, axis=-1).astype(np.int32)
        return (scale * x).reshape((n, *shape)), y

    train_eval, test_eval, val_eval = fixed(1, 2048), fixed(2, 2048), fixed(3, 2048)
    return Task(name="teacher", input_shape=shape, output_dim=TEACHER_CLASSES, sample=sample,
                loss=softmax_xent, metrics=classification_metrics, eval_train=train_eval,
                eval_val=val_eval, eval_test=test_eval, baseline=_label_entropy(test_eval[1], TEACHER_CLASSES),
                target_metric="accuracy", target=0.8, higher_is_better=True)


# ---------------------------------------------------------------------------- IDX files

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IDX_FILES = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), plain or gzip-compressed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(raw)} bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: IDX header promises {dims} ({expected} bytes) but holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (used by tests and to convert small datasets)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    Path(path).write_bytes(header + array.tobytes())


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(
        f"{data_dir}: missing {stem}[.gz]; expected the four IDX files "
        f"{', '.join(IDX_FILES.values())} (vgbench never downloads data)")


def _idx_task(name: str, spec) -> Task:
    if spec.data_dir is None:
        raise ValueError(f"task {name!r} reads IDX files you already have: pass --data-dir DIR "
                         f"holding {', '.join(IDX_FILES.values())}")
    data_dir = Path(spec.data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"task {name!r}: data_dir {str(data_dir)!r} is not a directory")
    arrays = {k: read_idx(_find(data_dir, stem)) for k, stem in IDX_FILES.items()}
    tx, ty, vx, vy = arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]
    hw = tx.shape[1:3]
    classes = int(max(ty.max(), vy.max())) + 1
    tx = tx.reshape(len(tx), -1).astype(np.float32)
    keep, held = carve_validation(len(tx), fraction=1 / 12)   # 60,000 -> 55,000 + 5,000
    return _array_task(name, spec, tx[keep], ty[keep], tx[held], ty[held],
                       vx.reshape(len(vx), -1).astype(np.float32), vy, hw, classes, 0.9)


def mnist(spec) -> Task:
    """MNIST handwritten digits from IDX files in --data-dir (LeCun et al. 1998)."""
    return _idx_task("mnist", spec)


def fashion_mnist(spec) -> Task:
    """Fashion-MNIST from IDX files in --data-dir (Xiao, Rasul & Vollgraf 2017)."""
    return _idx_task("fashion_mnist", spec)


for _make in (digits, teacher, mnist, fashion_mnist):
    register_task(_make.__name__, _make)
