"""Finite-width fluctuations of deep MLPs at initialization: the spread of the activation length
and of the backpropagated signal over inputs and weight draws, against the exact law.

Mean-field theory describes the *mean* squared length of a layer's activations and of its
backpropagated signal; at finite width both also fluctuate, and for ReLU networks with He
initialization the fluctuations grow exponentially in β = Σ_l 1/n_l (depth over width for a
constant width), while the mean stays put (Hanin & Rolnick 2018, "How to start training: the
effect of initialization and architecture"; Hanin 2018, "Which neural net architectures give
rise to exploding and vanishing gradients?").

The law used here, derived for this suite's networks (``docs/theory.md``, "Finite width").
A layer with Gaussian weights W_ij ~ N(0, σ_w²/n_in), zero biases and input h (fixed) gives
pre-activations z_i ~ N(0, σ_w² q) iid, q = |h|²/n_in. For ReLU with He's σ_w² = 2 the
post-activation length q' = |relu(z)|²/n over q is

    u(n) = (2/n) χ²_K,   K ~ Binomial(n, 1/2)   (the units that are on),

independent of h and of every other layer. So ln q_L - ln q_0 is a sum of independent terms:
its mean and variance are sums of :func:`relu_log_moments` over the layers, exactly; the mean
of q_L/q_0 is 1 and its second moment is Π_l (1 + 5/n_l) (the constant 5 = 4 Var(relu(g)²) for
g ~ N(0, 1); Hanin & Rolnick's "5β"). The typical length shrinks, E ln u(n) ≈ -5/(2n), while
the mean does not: at β = 1 the median of q_L/q_0 is about e^{-2.5} ≈ 0.08.

The backpropagated signal δ_l = ∂L/∂z_l obeys δ_l = D_l W_{l+1}ᵀ δ_{l+1} (D_l: the units that
are on). If the backward weights were independent of the forward ones (the "gradient
independence" assumption of mean-field analyses), ‖δ_l‖²/‖δ_{l+1}‖² would have the same law
u(n_l), and ln‖δ_1‖² - ln‖δ_L‖² the variance Σ_{l<L} Var ln u(n_l). That is an assumption, not
a theorem: :func:`measure` checks it.

For contrast, a linear network (tanh at its critical point σ_w = 1, σ_b = 0 is linear at small
lengths) has u(n) = χ²_n/n: Var ln u = ψ'(n/2) ≈ 2/n, fluctuations growing as e^{2β}.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

EULER_GAMMA = 0.5772156649015329
SEED_CHUNK = 32   # weight draws measured at once (64 of depth 64 x width 256 hold 1 GB)


# ---------------------------------------------------------------------------- exact moments

def digamma_half(k: int) -> float:
    """ψ(k/2) for a positive integer k, in closed form."""
    if k <= 0:
        raise ValueError(f"digamma_half: k must be positive, got {k}")
    if k % 2 == 0:
        m = k // 2
        return -EULER_GAMMA + sum(1.0 / j for j in range(1, m))
    m = (k - 1) // 2
    return -EULER_GAMMA - 2 * math.log(2) + sum(2.0 / (2 * j - 1) for j in range(1, m + 1))


def trigamma_half(k: int) -> float:
    """ψ'(k/2) for a positive integer k, in closed form."""
    if k <= 0:
        raise ValueError(f"trigamma_half: k must be positive, got {k}")
    if k % 2 == 0:
        m = k // 2
        return math.pi ** 2 / 6 - sum(1.0 / j ** 2 for j in range(1, m))
    m = (k - 1) // 2
    return math.pi ** 2 / 2 - sum(4.0 / (2 * j - 1) ** 2 for j in range(1, m + 1))


def log_chi2_moments(k: int) -> tuple[float, float]:
    """Mean and variance of ln χ²_k: ψ(k/2) + ln 2 and ψ'(k/2)."""
    return digamma_half(k) + math.log(2), trigamma_half(k)


@lru_cache(maxsize=None)
def relu_log_moments(n: int) -> tuple[float, float]:
    """Mean and variance of ln u, u = (2/n) χ²_K, K ~ Binomial(n, 1/2), conditioned on K >= 1
    (the chance 2^-n that every unit is off, where u = 0, is left out): the log-ratio of the
    post-activation length of a ReLU layer of width n with He-Gaussian weights to its input's."""
    ks = np.arange(1, n + 1)
    logp = np.array([math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                     for k in ks]) - n * math.log(2)
    p = np.exp(logp)
    p /= p.sum()
    means = np.array([log_chi2_moments(int(k))[0] for k in ks]) + math.log(2 / n)
    variances = np.array([log_chi2_moments(int(k))[1] for k in ks])
    mean = float(np.sum(p * means))
    return mean, float(np.sum(p * variances) + np.sum(p * (means - mean) ** 2))


def linear_log_moments(n: int) -> tuple[float, float]:
    """Mean and variance of ln(χ²_n / n): the length ratio of a linear layer of width n with
    Gaussian weights of variance 1/n_in."""
    mean, var = log_chi2_moments(n)
    return mean - math.log(n), var


class Prediction(NamedTuple):
    """The law of one network's log lengths at initialization (natural logs)."""

    beta: float          # Σ 1/n_l over the hidden layers
    forward_mean: float  # E[ln q_L - ln q_0], q_L the last hidden layer's pre-activation length
    forward_var: float   # Var[ln q_L - ln q_0]: exact
    backward_var: float  # Var[ln‖δ_1‖² - ln‖δ_L‖²], under gradient independence
    second_moment: float  # E[(q^x_L/q_0)²] of the post-activation length: Π (1 + c/n_l)


def predict(depth: int, width: int, kind: str = "relu") -> Prediction:
    """The law for an MLP of ``depth`` hidden layers of ``width`` units (the suite's ``depth``:
    a stem and depth - 1 hidden layers), Gaussian weights, zero biases: ``kind`` "relu" (He,
    σ_w² = 2) or "linear" (σ_w² = 1; tanh at criticality at small lengths).

    Forward: z_L's length over the input's is the product of depth - 1 post-activation ratios
    (the layers before the last) and the last layer's χ²_n/n times σ_w². Backward: depth - 1
    ratios, layers 1 .. L-1."""
    if depth < 1 or width < 1:
        raise ValueError(f"predict: depth and width must be positive, got {depth}, {width}")
    if kind == "relu":
        m, v = relu_log_moments(width)
        c = 5.0
    elif kind == "linear":
        m, v = linear_log_moments(width)
        c = 2.0
    else:
        raise ValueError(f"predict: kind must be 'relu' or 'linear', got {kind!r}")
    m_last, v_last = linear_log_moments(width)
    gain = math.log(2.0) if kind == "relu" else 0.0
    return Prediction(beta=depth / width,
                      forward_mean=(depth - 1) * m + m_last + gain,
                      forward_var=(depth - 1) * v + v_last,
                      backward_var=(depth - 1) * v,
                      second_moment=(1 + c / width) ** depth)


# ---------------------------------------------------------------------------- measurement

class Sample(NamedTuple):
    """Per (seed, example) log lengths of one network at initialization (natural logs)."""

    log_q: np.ndarray       # [seed, example, layer]: ln(|z_l|²/n_l), pre-activations
    log_q0: np.ndarray      # [seed, example]: ln(|x|²/n_0) of the input
    log_delta: np.ndarray   # [seed, example, layer]: ln‖∂L_i/∂z_l‖², each example's own loss


def measure(spec, seeds, *, batch: int = 64) -> Sample:
    """Log lengths of the forward pre-activations and of each example's backpropagated signal
    of the suite's MLP for ``spec`` (model "mlp", no normalization, no skip), at
    initialization, for every seed in ``seeds`` on one batch of the task's training inputs
    (seeds :data:`SEED_CHUNK` at a time)."""
    import jax
    import jax.numpy as jnp

    from vgbench import activations, models, tasks

    if spec.model != "mlp" or spec.norm != "none" or spec.skip != "none":
        raise ValueError("finite_width.measure: a plain MLP (model 'mlp', norm 'none', skip "
                         f"'none'), got model {spec.model!r}, norm {spec.norm!r}, skip {spec.skip!r}")
    task = tasks.make(spec)
    model = models.make(spec, task)
    act = activations.get(spec.activation).bind(spec)
    x, y = task.sample(jax.random.PRNGKey(0), batch)
    x = x.reshape(batch, -1)   # the MLP's view of an example: one vector

    def forward(params, probes):
        """Pre-activations and outputs; ``probes`` added to each layer's pre-activation."""
        h, zs = x, []
        layers = [params["stem"]] + [jax.tree_util.tree_map(lambda a, i=i: a[i], params["hidden"])
                                     for i in range(spec.depth - 1)]
        for p, probe in zip(layers, probes):
            z = h @ p["w"] + p["b"] + probe
            zs.append(z)
            h = act.apply(z, p["act"])
        return zs, h @ params["out"]["w"] + params["out"]["b"]

    def one(seed):
        params, state = model.init(jax.random.PRNGKey(seed))
        zero = [jnp.zeros((batch, spec.width), jnp.float32) for _ in range(spec.depth)]

        def total_loss(probes):   # the sum of the examples' losses (the task's is their mean):
            return batch * task.loss(forward(params, probes)[1], y)   # row i: example i's own

        zs, _ = forward(params, zero)
        grads = jax.grad(total_loss)(zero)
        log_q = jnp.stack([jnp.log(jnp.mean(jnp.square(z), axis=-1)) for z in zs], -1)
        log_d = jnp.stack([jnp.log(jnp.sum(jnp.square(g), axis=-1)) for g in grads], -1)
        return log_q, log_d

    seeds = [int(v) for v in seeds]
    run = jax.jit(jax.vmap(one))
    parts = [run(jnp.asarray(seeds[i:i + SEED_CHUNK] + [seeds[i]] * (SEED_CHUNK - len(
        seeds[i:i + SEED_CHUNK])))) for i in range(0, len(seeds), SEED_CHUNK)]
    # (the last chunk padded with repeats of its first seed: one compiled shape; cut off here)
    log_q = np.concatenate([np.asarray(q) for q, _ in parts])[:len(seeds)]
    log_d = np.concatenate([np.asarray(d) for _, d in parts])[:len(seeds)]
    log_q0 = np.broadcast_to(np.log(np.mean(np.square(np.asarray(x, np.float64)), axis=-1)),
                             (len(seeds), batch))
    return Sample(np.asarray(log_q, np.float64), np.asarray(log_q0), np.asarray(log_d, np.float64))


# ---------------------------------------------------------------------------- the study

# (depth, width) pairs over β = depth/width from 1/16 to 2, several depths at each β; the
# suite's depth counts the stem, so a network of depth L has L hidden layers of width n
PAIRS = ((4, 16), (8, 16), (16, 16), (32, 16),
         (4, 32), (8, 32), (16, 32), (32, 32), (64, 32),
         (4, 64), (8, 64), (16, 64), (32, 64), (64, 64),
         (8, 128), (16, 128), (32, 128), (64, 128),
         (16, 256), (32, 256), (64, 256))
# ReLU with He-Gaussian weights, against the exact law; tanh at its critical point
# (σ_w = 1, σ_b = 0, Gaussian), against the linear network's law it approaches at small lengths
NETWORKS = {"relu": dict(activation="relu", init="he_normal"),
            "tanh": dict(activation="tanh", init="gaussian", sigma_w=1.0, sigma_b=0.0)}
KIND = {"relu": "relu", "tanh": "linear"}
# the seed (the weight draw) is the independent unit: the examples of one draw share its weights
# and their log lengths are correlated (within-draw variance about a third of the total), so
# many draws of a batch each (32 examples: enough for the batch RMS a per-layer table reports)
SEEDS, BATCH, BOOTSTRAP = 256, 32, 1000


def pooled_var(values: np.ndarray) -> float:
    """Variance over every (seed, example) of ``values [seed, example]``: over weights and
    inputs together, as the law describes (ddof 1). NaN entries (a layer with every unit off:
    a length of exactly 0, left out of the law too) are skipped."""
    return float(np.nanvar(values, ddof=1))


def bootstrap_interval(values: np.ndarray, stat, *, draws: int = BOOTSTRAP, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``stat(values[seeds])`` over seeds resampled with replacement
    (the examples of one seed share its weights: the seed is the independent unit)."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    stats = [stat(values[rng.integers(0, n, n)]) for _ in range(draws)]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def summarize(network: str, depth: int, width: int, sample: Sample) -> dict:
    """One row: the measured spread and means with seed-bootstrap intervals, and the law."""
    with np.errstate(invalid="ignore"):   # a layer with every unit off: -inf, left out (NaN)
        forward = sample.log_q[:, :, -1] - sample.log_q0             # ln q_L - ln q_0
        backward = sample.log_delta[:, :, 0] - sample.log_delta[:, :, -1]   # ln‖δ_1‖² - ln‖δ_L‖²
    dead = ~(np.isfinite(forward) & np.isfinite(backward))
    forward, backward = np.where(dead, np.nan, forward), np.where(dead, np.nan, backward)
    law = predict(depth, width, KIND[network])
    ln10 = math.log(10)
    # what a per-layer table reports (the RMS over the batch of ‖δ_l‖, a log10 ratio of the
    # first layer to the last), against the typical example's (the median of its own ratio)
    with np.errstate(divide="ignore"):
        rms = 0.5 * (np.log(np.mean(np.exp(sample.log_delta[:, :, 0]), axis=1))
                     - np.log(np.mean(np.exp(sample.log_delta[:, :, -1]), axis=1))) / ln10
    row = {"network": network, "depth": depth, "width": width, "beta": law.beta,
           "seeds": forward.shape[0], "examples": forward.shape[1],
           "forward_var": pooled_var(forward), "forward_var_law": law.forward_var,
           "all_off": int(dead.sum()),
           "forward_mean": float(np.nanmean(forward)), "forward_mean_law": law.forward_mean,
           "backward_var": pooled_var(backward), "backward_var_independent": law.backward_var,
           "log10_rms_ratio": float(np.mean(rms)),
           "log10_median_ratio": float(np.nanmedian(backward)) / (2 * ln10)}
    for name, values in (("forward_var", forward), ("backward_var", backward)):
        row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_interval(values, pooled_var)
    return row


def run(results: str, *, seeds: int = SEEDS, batch: int = BATCH, pairs=PAIRS,
        networks=tuple(NETWORKS), progress=print):
    """Measure every (network, depth, width) at initialization on digits and write
    ``<results>/finite_width/init.csv`` with ``provenance.json`` beside it."""
    import json
    from pathlib import Path

    import pandas as pd

    from vgbench.record import env_info
    from vgbench.spec import RunSpec

    unknown = [n for n in networks if n not in NETWORKS]
    if unknown:
        raise ValueError(f"finite_width.run: unknown network {unknown[0]!r}; valid choices: "
                         f"{', '.join(NETWORKS)}")
    if not pairs or seeds < 2 or batch < 1:
        raise ValueError("finite_width.run: needs at least one (depth, width) pair, two seeds "
                         f"and one example; got {len(pairs)} pairs, {seeds} seeds, batch {batch}")
    rows = []
    for network in networks:
        for depth, width in pairs:
            spec = RunSpec(task="digits", model="mlp", depth=depth, width=width,
                           **NETWORKS[network])
            rows.append(summarize(network, depth, width, measure(spec, range(seeds), batch=batch)))
            progress(f"finite width: {network} depth {depth} width {width}: Var ln q "
                     f"{rows[-1]['forward_var']:.3f} (law {rows[-1]['forward_var_law']:.3f})")
    frame = pd.DataFrame(rows)
    folder = Path(results) / "finite_width"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "init.csv.tmp"
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(folder / "init.csv")
    meta = {"task": "digits", "seeds": seeds, "examples_per_seed": batch,
            "bootstrap": {"draws": BOOTSTRAP, "level": 0.95, "unit": "seed"},
            "networks": NETWORKS, "env": env_info()}
    tmp = folder / "provenance.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    tmp.replace(folder / "provenance.json")
    return frame
