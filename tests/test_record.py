"""Record building: blown-up losses count as diverged; validation metrics are recorded."""

import numpy as np

from vgbench import record as record_mod
from vgbench.diagnostics import BLOWUP_FACTOR, blown_up_at
from vgbench.spec import RunSpec
from vgbench.train import train


def test_a_finite_but_exploded_loss_is_a_divergence():
    steps = [0, 10, 20, 30]
    baseline = 1 / 6
    calm = np.array([5.0, 0.2, 0.1, 0.05])           # a large loss at init alone is no divergence
    assert blown_up_at(calm, 0.05, steps, 30, baseline) is None
    # an exploded start (a deep ReLU residual stack) that comes down is training, not blowing up
    recovering = np.array([3e13, 601.0, 43.5, 3.8])
    assert blown_up_at(recovering, 2.0, steps, 30, baseline) is None
    assert blown_up_at(np.array([3e13, 601.0, 4e13, 3.8]), 2.0, steps, 30, baseline) == 20
    exploded = np.array([0.2, 0.17, 9.05e33, 1e30])
    assert blown_up_at(exploded, 1e30, steps, 30, baseline) == 20
    at_end = np.array([0.2, 0.17, 0.16, 0.16])
    assert blown_up_at(at_end, BLOWUP_FACTOR * baseline * 1.01, steps, 30, baseline) == 30
    assert blown_up_at(at_end, BLOWUP_FACTOR * baseline * 0.99, steps, 30, baseline) is None


def test_records_carry_validation_metrics_at_every_log_point_and_at_the_end():
    spec = RunSpec(depth=3, width=8, steps=20, log_every=10, batch_size=16)
    program, raw = train(spec, [0, 1])
    rec = record_mod.build_record(spec, [0, 1], raw.outputs, task=program.task,
                                  layer_names=program.model.layer_names, compile_s=0.0, run_s=0.0)
    m = rec["metrics"]
    assert len(m["final_val_loss"]) == 2 and len(m["final_val_accuracy"]) == 2
    assert all(0 <= a <= 1 for a in m["final_val_accuracy"])
    assert np.asarray(rec["diagnostics"]["val_metric"]).shape == (2, 3)
    assert m["final_val_loss"] != m["final_test_loss"]           # two different splits
