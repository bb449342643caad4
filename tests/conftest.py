"""Shared test setup: a headless matplotlib backend, figures closed after every test."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread: the tests' small QR factorizations (orthogonal inits) gain nothing from
# more, and a multi-threaded OpenBLAS has been seen to stall on shared 2-core machines.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Two CPU devices on every machine: the recurrent model's split batch (vgbench.train.batch_split)
# runs in the tests whatever the number of cores.
os.environ.setdefault("VGBENCH_CPU_DEVICES", "2")

# Tests check numbers, not speed: cheaper XLA compilation halves the suite's wall time on CPU.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()

import vgbench  # noqa: E402,F401  (sets vgbench's XLA flags before a test module imports JAX)

# isort: split
import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory):
    """One persistent compilation cache for every results directory of the tests."""
    return tmp_path_factory.getbasetemp() / "vgbench-jax-cache"
