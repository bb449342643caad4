"""What each figure kind shows (its caption) and what to look at in it, in one place.

The figure files use the captions; the report's ``README.md`` shows every figure inline with
its caption and the sentence of :data:`LOOK_AT`. Plain text only: no matplotlib here, so the
index can read it without drawing anything.
"""

from __future__ import annotations

CAPTIONS = {
    "grad_vs_layer": "‖∂L/∂h_l‖ against layer at initialisation, one line per entry, one panel "
                     "per {axis}; ▼ on the bottom edge: a seed's signal underflowed float32, ○: "
                     "exactly 0 with no small neighbour (no gradient path: a zero-initialised "
                     "gain, dead units); panels whose magnitudes differ by orders have their own y "
                     "scale",
    "grad_heatmap": "log10 ‖∂L/∂h_l‖ over depth × layer at initialisation, one panel per entry; "
                    "grey cells are below the colour scale (an underflow included) and red ones "
                    "above it; blank: beyond the network's depth, or exactly 0 with no small "
                    "neighbour (no gradient path)",
    "loss_curves": "training loss over the seeds that finished; × marks a detected plateau, "
                   "dashed: trivial predictor; the y axis spans the finished seeds, ▲ marks a "
                   "line that leaves it",
    "grad_over_steps": "per-layer gradient norm ‖∂L/∂W_l‖ over training{where}",
    "weight_trajectories": "relative change ‖w − w₀‖/‖w₀‖ of four fixed weights per layer over "
                           "training{where} (a layer starting at w₀ = 0: absolute change, "
                           "dashed)",
    "time_grad": "‖∂L/∂h_t‖ against time step t at initialisation (top) and end (bottom), per "
                 "{axis}",
    "loss_vs_baseline": "final test loss over the trivial predictor's loss against {axis}",
    "frontier": "share of seeds reaching the target against {axis} (dotted: 2/3, the frontier)",
    "dead_saturation": "unit fractions of the hidden layers at the end of training against "
                       "{axis}: dead (outputs 0 on every example), inactive (a rectifier's "
                       "off side, derivative below 1 % of its maximum) and tail-saturated (a "
                       "bounded activation in a flat tail, derivative below 1 % of its maximum)",
    "outcomes": "final test metric and unit fractions of each entry, one row per entry at the "
                "{axis} it ran: dot, the mean over the seeds that finished (the tables' number); "
                "bar, their range; seeds that diverged or failed counted on the right",
}

LOOK_AT = {
    "grad_vs_layer": "A line that falls to the left is a signal that vanishes on its way back "
                     "to the input; the steeper the fall, the fewer layers can learn. Compare "
                     "the panels: the fall grows with depth.",
    "grad_heatmap": "Each row is one depth: a row that darkens to the left loses signal layer "
                    "by layer. Entries that keep one colour across a row pass the signal "
                    "through unchanged.",
    "loss_curves": "A curve that stays flat on the dashed line has learned nothing: its "
                   "gradient did not reach the layers that matter. × marks where the loss "
                   "stopped moving.",
    "grad_over_steps": "Dark lines are the layers near the input: when they sit far below the "
                       "light ones, the first layers get almost no gradient all through "
                       "training.",
    "weight_trajectories": "Dark lines are the layers near the input. Lines near the bottom "
                           "(a change of 10⁻⁴ of the weights' size or less) are layers that "
                           "did not move: the frozen early layers of a vanishing gradient.",
    "time_grad": "A line that falls to the left is a signal that does not reach the early time "
                 "steps: the network cannot learn a dependence on them. Gated cells (LSTM, GRU) "
                 "should stay flat.",
    "loss_vs_baseline": "Below 1 the model learned more than the trivial predictor; at 1 it "
                        "learned nothing. Watch where each cell rises to 1 as T grows.",
    "frontier": "The trainability frontier is where a line drops below the dotted 2/3: the "
                "deepest network (or longest sequence) that still trains.",
    "outcomes": "Read across a row: an entry whose dot sits far right with a short bar trained "
                "reliably; a long bar is a seed-dependent outcome; a count on the right is "
                "seeds lost to divergence.",
    "dead_saturation": "ReLU-like units are inactive on about half the examples, which is "
                       "normal; dead units (never active) and tail-saturated sigmoid or tanh "
                       "units pass almost no gradient back.",
}


def figure_kind(name: str) -> str | None:
    """The figure kind of a figure name (``time_grad_adding`` -> ``time_grad``), or None."""
    kinds = [k for k in CAPTIONS if name == k or name.startswith(k + "_")]
    return max(kinds, key=len) if kinds else None
