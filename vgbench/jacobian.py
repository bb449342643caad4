"""Singular values of the input-output Jacobian of a feed-forward network at initialization.

The Jacobian is that of the last hidden layer's output (after its activation, norm and skip)
with respect to the input, ``J = d h^L / d x``, shape ``[width, input_dim]``: the product
``D_L W_L ... D_1 W_1`` of Pennington et al. (2017), without the readout (whose few outputs
would hide the spectrum). It is evaluated in eval mode at a few fixed inputs (the task's
first test examples), one spectrum per input, pooled.

Two ways to get the singular values:

* ``"exact"``: ``jax.jacrev`` and a float64 SVD of the float32 Jacobian, for widths up to
  :data:`EXACT_MAX_WIDTH`.
* ``"lanczos"``: stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017) by Golub-Kahan
  bidiagonalization with full reorthogonalization, from Jacobian-vector and vector-Jacobian
  products only: ``steps`` of them give Ritz singular values and weights whose weighted
  distribution estimates the spectral distribution of ``J``. The largest singular values
  converge first; the smallest, and the quantiles near 0, are coarse.

Either way the products run in float32: singular values below about ``1e-6`` times the largest
are not resolved. A record keeps, per seed, the quantiles of the pooled spectrum at
:data:`QUANTILES` = 0, 0.01, ..., 1 (``jacobian_singular_values[seed][k]`` is the
``k / (K - 1)`` quantile, ``K = 101``: the minimum, the percentiles, the maximum), and
``log10 (1/n_in) ||J||_F^2`` (``summary.jacobian_log10_mean_sq``), whose mean-field value is
``L log10 chi_1`` for ``L`` hidden layers at ``q*``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vgbench import models, tasks
from vgbench.spec import RunSpec
from vgbench.train import init_params

EXACT_MAX_WIDTH = 512
LANCZOS_STEPS = 64
LANCZOS_STARTS = 8
BREAKDOWN = 1e-10     # relative size of a Golub-Kahan coefficient that ends a run
N_INPUTS = 4
QUANTILES = tuple(np.round(np.linspace(0.0, 1.0, 101), 2).tolist())
FIELD = "jacobian_singular_values"


class Spectrum(NamedTuple):
    """A weighted sample of singular values: ``values`` sorted ascending, ``weights`` summing to 1."""

    values: np.ndarray
    weights: np.ndarray
    method: str
    mean_sq: float      # (1/n_in) ||J||_F^2, averaged over the inputs


def hidden_output_fn(model: models.Model) -> Callable:
    """``f(params, state, x) -> h^L``: one input (no batch axis) to the last hidden layer's output.

    The model's linear readout is replaced by the identity, so ``apply`` returns its input.
    """
    def f(params, state, x):
        width = params["out"]["w"].shape[0]
        identity_head = {"w": jnp.eye(width, dtype=params["out"]["w"].dtype),
                         "b": jnp.zeros((width,), params["out"]["b"].dtype)}
        out, _, _ = model.apply({**params, "out": identity_head}, state, x[None], train=False)
        return out[0]

    return f


def exact_spectrum(jacobians_fn: Callable, params, state, inputs) -> Spectrum:
    """All singular values of the Jacobian at each input, pooled with equal weights.

    ``jacobians_fn(params, state, inputs)`` gives ``[n_inputs, out_dim, *input_shape]``.
    """
    jac = np.asarray(jacobians_fn(params, state, inputs), np.float64)
    jac = jac.reshape(jac.shape[0], jac.shape[1], -1)
    values = np.concatenate([np.linalg.svd(j, compute_uv=False) for j in jac])
    mean_sq = float(np.mean(np.sum(jac ** 2, axis=(1, 2)) / jac.shape[2]))
    order = np.argsort(values)
    return Spectrum(values[order], np.full(len(values), 1.0 / len(values)), "exact", mean_sq)


def jacobians_fn(model: models.Model) -> Callable:
    """Jitted ``(params, state, inputs) -> [n_inputs, width, *input_shape]``, exact (jacrev)."""
    f = hidden_output_fn(model)
    return jax.jit(lambda p, s, xs: jax.vmap(jax.jacrev(lambda x: f(p, s, x)))(xs))


def golub_kahan(jvp: Callable, vjp: Callable, starts: np.ndarray, steps: int):
    """Golub-Kahan bidiagonalization of ``J`` from a block of starts, advanced together.

    Args:
      jvp, vjp: ``V [s, n_in] -> J V`` and ``U [s, n_out] -> J^T U``, row by row.
      starts: ``[s, n_in]`` starting vectors (normalized here), one independent run each.
      steps: at most this many steps per run (fewer on breakdown: an invariant subspace).

    Returns:
      ``(values, weights)``, each ``[s]`` arrays: per run the singular values of its bidiagonal
      ``B_k`` and the squared first components of its right singular vectors, the Gauss
      quadrature of ``J^T J``'s spectral measure seen from that start (they sum to 1 per run).
      A run that breaks down because ``J v`` vanishes keeps that zero singular value.
    """
    v = starts / np.linalg.norm(starts, axis=1, keepdims=True)
    n_runs = len(v)
    alphas, betas = np.zeros((n_runs, steps)), np.zeros((n_runs, steps))
    length = np.zeros(n_runs, int)
    active = np.ones(n_runs, bool)
    vs, us = [v], []
    u = np.asarray(jvp(v), np.float64)
    scale = np.zeros(n_runs)
    for step in range(steps):
        alpha = np.linalg.norm(u, axis=1)
        scale = np.maximum(scale, alpha)
        broken = active & (alpha <= BREAKDOWN * np.maximum(scale, 1e-300))
        alphas[active, step] = np.where(broken[active], 0.0, alpha[active])
        length[active] = step + 1
        active &= ~broken
        u = np.where(active[:, None], u / np.where(active, alpha, 1.0)[:, None], 0.0)
        us.append(u)
        if step == steps - 1 or not active.any():
            break
        v = np.asarray(vjp(u), np.float64) - alpha[:, None] * vs[-1]
        v = _reorthogonalize(v, vs)
        beta = np.linalg.norm(v, axis=1)
        scale = np.maximum(scale, beta)
        active &= beta > BREAKDOWN * np.maximum(scale, 1e-300)
        betas[active, step] = beta[active]
        v = np.where(active[:, None], v / np.where(active, beta, 1.0)[:, None], 0.0)
        vs.append(v)
        u = _reorthogonalize(np.asarray(jvp(v), np.float64) - beta[:, None] * us[-1], us)
    values, weights = [], []
    for run in range(n_runs):
        k = length[run]
        bidiagonal = np.diag(alphas[run, :k]) + np.diag(betas[run, :k - 1], 1)
        _, sigma, right_t = np.linalg.svd(bidiagonal)
        values.append(sigma)
        weights.append(right_t[:, 0] ** 2 / np.sum(right_t[:, 0] ** 2))
    return values, weights


def _reorthogonalize(w: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    """``w`` [s, n] minus its projection on each run's earlier vectors (twice: Kahan's rule)."""
    stacked = np.stack(basis, axis=1)                     # [s, k, n]
    for _ in range(2):
        w = w - np.einsum("skn,sk->sn", stacked, np.einsum("skn,sn->sk", stacked, w))
    return w


class Products(NamedTuple):
    """Jitted Jacobian products of a model at ``(params, state, x)``, on blocks of flat vectors."""

    jvp: Callable        # (params, state, x, V [s, n_in]) -> J V  [s, n_out]
    vjp: Callable        # (params, state, x, U [s, n_out]) -> J^T U  [s, n_in]


def products_fn(model: models.Model, input_shape: tuple[int, ...]) -> Products:
    """Blocked Jacobian-vector and vector-Jacobian products of :func:`hidden_output_fn`."""
    f = hidden_output_fn(model)

    def jvp(p, s, x, v):
        return jax.jvp(lambda y: f(p, s, y), (x,), (v.reshape(input_shape),))[1]

    def vjp(p, s, x, u):
        return jnp.ravel(jax.vjp(lambda y: f(p, s, y), x)[1](u)[0])

    block = dict(in_axes=(None, None, None, 0))
    return Products(jax.jit(jax.vmap(jvp, **block)), jax.jit(jax.vmap(vjp, **block)))


def lanczos_spectrum(products: Products, params, state, inputs, *, steps: int = LANCZOS_STEPS,
                     starts: int = LANCZOS_STARTS, seed: int = 0) -> Spectrum:
    """Stochastic Lanczos quadrature estimate of the Jacobian's singular value distribution.

    ``starts`` Golub-Kahan runs per input from random starts, all pooled with equal weight.
    The mean squared singular value ``||J||_F^2 / n_in`` is Hutchinson's estimate, the mean of
    ``|J v|^2`` over the random unit starts ``v`` (unbiased).
    """
    inputs = jnp.asarray(inputs)
    n_in = math.prod(inputs.shape[1:])
    steps = min(steps, n_in)
    rng = np.random.default_rng(seed)
    values, weights, mean_sqs = [], [], []
    for x in inputs:
        def jvp(v, x=x):
            return products.jvp(params, state, x, jnp.asarray(v, jnp.float32))

        def vjp(u, x=x):
            return products.vjp(params, state, x, jnp.asarray(u, jnp.float32))

        block = rng.standard_normal((starts, n_in))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        mean_sqs.append(np.mean(np.sum(np.asarray(jvp(block), np.float64) ** 2, axis=1)))
        run_values, run_weights = golub_kahan(jvp, vjp, block, steps)
        values += run_values
        weights += [w / (len(inputs) * starts) for w in run_weights]
    values, weights = np.concatenate(values), np.concatenate(weights)
    order = np.argsort(values)
    return Spectrum(values[order], weights[order], "lanczos", float(np.mean(mean_sqs)))


def weighted_quantiles(spectrum: Spectrum, probabilities=QUANTILES) -> np.ndarray:
    """Quantiles of the weighted distribution, interpolated between the weights' midpoints.

    With equal weights this is the Hazen quantile (``numpy.quantile(method="hazen")``).
    """
    cumulative = np.cumsum(spectrum.weights)
    midpoints = cumulative - spectrum.weights / 2
    return np.interp(np.asarray(probabilities, float), midpoints, spectrum.values)


def method_for(spec: RunSpec, method: str = "auto") -> str:
    """``"exact"`` for widths up to EXACT_MAX_WIDTH, else ``"lanczos"``, unless a method is named."""
    if method not in ("auto", "exact", "lanczos"):
        raise ValueError(f"method must be 'auto', 'exact' or 'lanczos', got {method!r}")
    if method != "auto":
        return method
    return "exact" if spec.width <= EXACT_MAX_WIDTH else "lanczos"


def spectra(spec: RunSpec, seeds, *, n_inputs: int = N_INPUTS, method: str = "auto",
            steps: int = LANCZOS_STEPS) -> list[Spectrum]:
    """The Jacobian spectrum of ``spec``'s network at initialization, one per seed.

    The parameters are those the run of ``spec`` with these seeds starts from
    (:func:`vgbench.train.init_params`), so a spectrum belongs to the run's own networks.
    """
    if not models.facts(spec.model).mean_field:
        raise ValueError(f"Jacobian spectra are for stacks of dense layers (models registered "
                         f"with mean_field=True, such as 'mlp'), got {spec.model!r}")
    seeds = [int(s) for s in seeds]
    method = method_for(spec, method)
    task = tasks.make(spec)
    model = models.make(spec, task)
    params, state, _ = init_params(spec, seeds, task=task)
    inputs = jnp.asarray(task.eval_test[0][:n_inputs])
    if method == "exact":
        exact = jacobians_fn(model)
    else:
        products = products_fn(model, tuple(inputs.shape[1:]))
    out = []
    for i, seed in enumerate(seeds):
        p, s = jax.tree_util.tree_map(lambda a: a[i], (params, state))
        out.append(exact_spectrum(exact, p, s, inputs) if method == "exact"
                   else lanczos_spectrum(products, p, s, inputs, steps=steps, seed=seed))
    return out


def spectrum_for(spec: RunSpec, seeds, **kwargs) -> list[list[float]]:
    """Per seed, the singular-value quantiles at QUANTILES (see :func:`spectra`)."""
    return [weighted_quantiles(s).tolist() for s in spectra(spec, seeds, **kwargs)]


def jacobian_diagnostics(spec: RunSpec, seeds, **kwargs) -> tuple[dict, dict]:
    """``(diagnostics, summary)`` fields of a record: the spectra of :func:`spectra`.

    diagnostics: ``jacobian_singular_values`` ``[seed][k]`` (the ``k / (K - 1)`` quantile of
    seed's spectrum, K = len(QUANTILES)), ``jacobian_method`` (``"exact"`` or ``"lanczos"``)
    and ``jacobian_inputs`` (the number of inputs pooled). summary, per seed:
    ``jacobian_log10_mean_sq`` (log10 of the mean squared singular value, ``||J||_F^2/n_in``),
    ``jacobian_log10_condition`` (log10 of the 99th over the 1st percentile).
    """
    found = spectra(spec, seeds, **kwargs)
    quantiles = [weighted_quantiles(s) for s in found]
    diagnostics = {FIELD: [q.tolist() for q in quantiles],
                   "jacobian_method": found[0].method if found else method_for(spec),
                   "jacobian_inputs": kwargs.get("n_inputs", N_INPUTS)}
    summary = {"jacobian_log10_mean_sq": [_log10(s.mean_sq) for s in found],
               "jacobian_log10_condition": [_log10_ratio(q[99], q[1]) for q in quantiles]}
    return diagnostics, summary


def add_to_record(record: dict, **kwargs) -> dict:
    """``record`` with the Jacobian spectra of its config and seeds added (a new dict)."""
    from vgbench.record import clean

    spec = RunSpec.from_record(record)
    diagnostics, summary = jacobian_diagnostics(spec, record["seeds"], **kwargs)
    return {**record, "diagnostics": {**record.get("diagnostics", {}), **clean(diagnostics)},
            "summary": {**record.get("summary", {}), **clean(summary)}}


def _log10(value: float) -> float | None:
    return math.log10(value) if value > 0 and math.isfinite(value) else None


def _log10_ratio(high: float, low: float) -> float | None:
    return math.log10(high / low) if low > 0 and high > 0 and math.isfinite(high / low) else None


# ---------------------------------------------------------------------------- records on disk

def annotate(results_dir, studies=("theory",), *, max_width: int | None = EXACT_MAX_WIDTH,
             force: bool = False, **kwargs) -> list:
    """Add the Jacobian spectra to the records of ``studies`` under ``<results_dir>/runs``.

    Only feed-forward runs no wider than ``max_width`` (None: any width) get spectra; records
    that already carry them (unless ``force``), records of other studies and records whose
    every seed failed are left alone. Each record is rewritten through the store, holding the
    run's lock (a run another process holds is left for later). Returns the paths written.
    """
    import json

    from vgbench.store import Store

    store = Store(results_dir)
    written = []
    for path in sorted(store.runs.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        config = record.get("config", {})
        if record.get("study") not in studies or config.get("model") not in models.MODELS \
                or not models.facts(config["model"]).mean_field:
            continue
        if max_width is not None and config.get("width", 0) > max_width:
            continue
        if all(s == "failed" for s in record.get("status", ["failed"])):
            continue
        if FIELD in record.get("diagnostics", {}) and not force:
            continue
        done = store.update(record["run_id"], lambda current: add_to_record(current, **kwargs))
        if done is not None:
            written.append(done)
    return written


def main(argv=None) -> int:
    """``python -m vgbench.jacobian RESULTS [--study NAME]...``: annotate a study's records."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vgbench.jacobian", description=(
        "Add input-output Jacobian spectra at initialization to the run records of a study."))
    parser.add_argument("results", help="results directory (records in RESULTS/runs)")
    parser.add_argument("--study", action="append", default=None,
                        help="study whose records get spectra (repeatable; default: theory)")
    parser.add_argument("--method", choices=("auto", "exact", "lanczos"), default="auto")
    parser.add_argument("--inputs", type=int, default=N_INPUTS, help="inputs per network")
    parser.add_argument("--max-width", type=int, default=EXACT_MAX_WIDTH,
                        help=f"only runs this wide or narrower (default {EXACT_MAX_WIDTH}, the "
                             "widest with exact spectra; 0: every width)")
    parser.add_argument("--force", action="store_true", help="recompute existing spectra")
    args = parser.parse_args(argv)
    paths = annotate(args.results, tuple(args.study or ["theory"]), force=args.force,
                     max_width=args.max_width or None, method=args.method, n_inputs=args.inputs)
    print(f"added Jacobian spectra to {len(paths)} record{'s' * (len(paths) != 1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
