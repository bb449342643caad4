"""Diagnosis of one model on one batch: the per-layer table of ||dL/dh_l||, the verdict, a figure.

Two ways in:

* ``vgbench diagnose --model NAME [--plugin FILE] [--task T | --data-dir FILE.npz]`` builds the
  model a run config names, measures it at initialization (a run of 0 steps), prints the
  table and the verdict, and writes the run record and the ||dL/dh_l||-against-layer figure.
* :func:`flax_layer_table` (a flax.linen module and its variables), :func:`nnx_layer_table`
  (a flax.nnx module, which holds its own variables) or :func:`layer_table` (any
  :class:`vgbench.models.Model`) inside a user's own training loop: params, loss and one batch
  give the same tidy per-layer table, at any point of training.

The task ``npz`` reads one batch of the user's own arrays, ``x`` and ``y``, from the .npz file
named by ``data_dir``: integer ``y`` is classification (softmax cross-entropy), float ``y`` is
regression (mean squared error).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TABLE_COLUMNS = ("layer", "layer_name", "delta_norm", "grad_norm", "weight_norm", "act_rms")


def layer_table(model, params, state, x, y, loss) -> pd.DataFrame:
    """One row per layer (input -> output): ||dL/dh_l|| (RMS over the batch), ||dL/dW_l||,
    ||W_l|| and the forward RMS, for ``loss(outputs, y) -> scalar`` on the batch ``(x, y)``."""
    import jax

    def objective(p, probes):
        out, _, stats = model.apply(p, state, x, train=True, probes=probes)
        return loss(out, y), stats

    (_, stats), (grads, probe_grads) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
        params, model.probes(len(x)))
    columns = {"delta_norm": model.probe_stats(probe_grads)["delta_norm"],
               "grad_norm": model.per_layer(grads), "weight_norm": model.per_layer(params),
               "act_rms": stats.get("act_rms")}
    table = pd.DataFrame({k: np.asarray(v, np.float64) for k, v in columns.items()})
    table.insert(0, "layer_name", list(model.layer_names))
    table.insert(0, "layer", np.arange(1, len(table) + 1))
    time = model.probe_stats(probe_grads).get("time_delta_norm")
    if time is not None:   # a recurrent model: ||dL/dh_t|| of its first recurrent layer, t = 1..T
        table.attrs["time_delta_norm"] = np.asarray(time, np.float64)
    return table


def time_text(profile) -> str:
    """A recurrent layer's ||dL/dh_t|| profile (t = 1..T) in words: how much smaller the
    signal reaching the first step is than at the last, and the effective horizon."""
    from vgbench import diagnostics

    row = np.asarray(profile, np.float64)
    fall = diagnostics.attenuation(row)
    horizon = diagnostics.effective_horizon(row)
    if fall is None or not np.isfinite(fall):
        return f"over time ({len(row)} steps): no signal measured"
    size = "smaller" if fall < 0 else "larger"
    return (f"over time: ||dL/dh_1|| is 10^{abs(fall):.1f} times {size} than ||dL/dh_T|| "
            f"(T = {len(row)}); effective horizon {horizon} of {len(row) - 1} steps back")


def flax_layer_table(module, variables, x, y, loss) -> pd.DataFrame:
    """:func:`layer_table` of a flax.linen ``module`` with ``variables`` (``params`` plus any
    state such as ``batch_stats``) on one batch, for use inside one's own training loop.
    Integer inputs (tokens) keep their dtype; a module with dropout runs in training mode with
    one fixed key."""
    import jax

    from vgbench.models.flax_adapter import RNG_STATE, adapt_module

    model = adapt_module(module, tuple(np.shape(x)[1:]), input_dtype=np.asarray(x).dtype)
    state = {k: v for k, v in variables.items() if k != "params"}
    needs = jax.eval_shape(model.init, jax.random.PRNGKey(0))[1].get(RNG_STATE)
    if needs is not None:   # dropout and other streams: a fixed key for this one batch
        state[RNG_STATE] = model.init(jax.random.PRNGKey(0))[1][RNG_STATE]
    table = layer_table(model, variables["params"], state, x, y, loss)
    from vgbench.models.flax_adapter import graph

    return with_roles(table, graph("flax"))


def with_roles(table: pd.DataFrame, graph) -> pd.DataFrame:
    """``table`` with a column ``path``: ``signal`` for the layers on the longest path from
    input to output (what the verdict reads), ``side`` for the others the output depends on
    (a key beside a query, a second head), ``unused`` for those it does not (no gradient);
    unchanged without a ``graph`` (:class:`vgbench.models.flax_adapter.Graph`)."""
    if graph is None:
        return table
    roles = ["unused"] * len(table)
    for i in graph.side:
        roles[i] = "side"
    for i in graph.chain:
        roles[i] = "signal"
    return table.assign(path=roles)


def nnx_layer_table(module, x, y, loss) -> pd.DataFrame:
    """:func:`layer_table` of a flax.nnx ``module`` (its parameters and state as they are now)
    on one batch, for use inside one's own training loop; the module is not changed."""
    from vgbench.models.nnx_adapter import adapt_nnx_module

    model, params, state = adapt_nnx_module(module, tuple(np.shape(x)[1:]))
    return layer_table(model, params, state, x, y, loss)


def verdict_text(table: pd.DataFrame) -> str:
    """The verdict of a layer table's ||dL/dh_l|| profile, in one line; with a ``path`` column
    (:func:`with_roles`) the profile along the signal path only, and the layers off it named
    apart."""
    from vgbench import diagnostics, verdict

    zero = diagnostics.exact_zeros(table["delta_norm"].to_numpy())
    rows = table[~zero & ((table["path"] == "signal") if "path" in table else True)]
    v, span, prof = verdict.classify(rows["delta_norm"].tolist())
    text = verdict.phrase("verdict", v, span, prof, tuple(rows["layer_name"]))
    if "time_delta_norm" in table.attrs:   # a recurrent model: the profile over time says more
        text = ("verdict: " if v is None else text + "; ") + time_text(
            table.attrs["time_delta_norm"])
    if "path" in table:
        for role, what in (("side", "off the signal path"),
                           ("unused", "not read by the output (no gradient)")):
            names = table.loc[(table["path"] == role) & (~zero | (role == "unused")),
                              "layer_name"].tolist()
            if names:
                text += f"; {what}: {', '.join(names)}"
    unused = ((table["path"] == "unused").to_numpy() if "path" in table
              else np.zeros(len(table), bool))
    names = table.loc[zero & ~unused, "layer_name"].tolist()   # the graph says why unused ones are
    if names:
        text += (f"; exactly 0, no gradient (a zero-initialised scale or an unused output), "
                 f"not vanishing: {', '.join(names)}")
    return text


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in TABLE_COLUMNS[2:]:
        shown[col] = [f"{v:.3e}" if np.isfinite(v) else "-" for v in shown[col]]
    return shown.to_string(index=False)


def plot_profile(table: pd.DataFrame, path: str | Path, *, title: str = "") -> list[Path]:
    """Figure of ||dL/dh_l|| against layer (log scale), saved as PNG and PDF next to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.25 * len(table) + 2), 3.2))
    values = table["delta_norm"].where(table["delta_norm"] > 0)
    ax.semilogy(table["layer"], values, marker="o")
    ax.set_xlabel("layer (input -> output)")
    ax.set_ylabel("||dL/dh_l||")
    ax.set_title(title, fontsize=9)
    if len(table) <= 40:
        ax.set_xticks(table["layer"], table["layer_name"], rotation=90, fontsize=6)
    ax.grid(True, which="both", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        fig.savefig(p, bbox_inches="tight", dpi=150)
    plt.close(fig)
    return out


def record_table(rec: dict, seed_index: int = 0) -> pd.DataFrame:
    """The per-layer table of a run record's first log point (initialization), one seed."""
    d = rec["diagnostics"]
    table = pd.DataFrame({"layer": np.arange(1, len(d["layer_names"]) + 1),
                          "layer_name": d["layer_names"]})
    for col in TABLE_COLUMNS[2:]:
        row = d[col][seed_index][0] if col in d else [None] * len(table)
        table[col] = np.asarray([np.nan if v is None else v for v in row], np.float64)
    return table


# ---------------------------------------------------------------------------- the npz task

def npz_task(spec):
    """One batch of your own arrays: x and y from the .npz file named by data_dir (vgbench diagnose)."""
    import jax.numpy as jnp

    from vgbench import tasks

    if not spec.data_dir:
        raise ValueError("task 'npz' reads x and y from an .npz file: give it as data_dir "
                         "(--data-dir FILE.npz)")
    path = Path(spec.data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"task 'npz': no file {str(path)!r}")
    with np.load(path) as arrays:
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise ValueError(f"task 'npz': {path} has arrays {sorted(arrays)}; it needs 'x' and 'y'")
        x, y = np.asarray(arrays["x"], np.float32), np.asarray(arrays["y"])
    if len(x) != len(y):
        raise ValueError(f"task 'npz': x has {len(x)} examples and y {len(y)}")
    classify = np.issubdtype(y.dtype, np.integer)
    if classify:
        y = y.astype(np.int32)
        classes = int(y.max()) + 1
        p = np.bincount(y, minlength=classes) / len(y)
        baseline = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        loss, metrics, out_dim = tasks.softmax_xent, tasks.classification_metrics, classes
    else:
        y = y.astype(np.float32).reshape(len(y), -1)
        baseline = float(np.mean(np.square(y - y.mean(0))))
        out_dim = y.shape[1]
        loss, metrics = tasks.mse, (lambda out, t: {"loss": tasks.mse(out, t)})
    x_j, y_j = jnp.asarray(x), jnp.asarray(y)

    def sample(key, batch_size):
        return x_j[:batch_size], y_j[:batch_size]

    fields = dict(name="npz", input_shape=tuple(x.shape[1:]), output_dim=out_dim, sample=sample,
                  loss=loss, metrics=metrics, eval_train=(x, y), eval_val=(x, y),
                  eval_test=(x, y), baseline=baseline,
                  target_metric="accuracy" if classify else "loss",
                  target=1.0 if classify else 0.0, higher_is_better=classify)
    return tasks.Task(**{k: v for k, v in fields.items() if k in tasks.Task._fields})


def _register() -> None:
    from vgbench import tasks

    if "npz" not in tasks.TASKS:
        tasks.register_task("npz", npz_task)


_register()
