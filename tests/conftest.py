"""Shared test setup: a headless matplotlib backend, figures closed after every test."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# One BLAS thread: the tests' small QR factorizations (orthogonal inits) gain nothing from
# more, and a multi-threaded OpenBLAS has been seen to stall on shared 2-core machines.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Tests check numbers, not speed: cheaper XLA compilation halves the suite's wall time on CPU.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_COMPILE).strip()

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
