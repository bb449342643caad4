"""``Writer(logdir, monitor, every=N)``: a monitor's statistics to TensorBoard, CSV and W&B,
and a warning when the ||dL/dh|| profile is vanishing or exploding.

TensorBoard event files are written with tensorboardX (the ``monitor`` extra): it is pure
Python on numpy and protobuf (both already in vgbench's lock), maintained, and writes the
standard event format that ``tensorboard --logdir`` reads, with no TensorFlow and no PyTorch.
The writer is the only part of the monitor that leaves the device: every ``every`` steps it
transfers the step's statistics (a few hundred floats) in one ``jax.device_get``.
"""

from __future__ import annotations

import csv
import re
import struct
import warnings
from pathlib import Path

import numpy as np

from vgbench import verdict
from vgbench.monitor.stats import GROUP_STATS, LAYER_STATS, STEP_STATS

CSV_FILES = {"layers.csv": ("layer", LAYER_STATS), "groups.csv": ("group", GROUP_STATS),
             "steps.csv": (None, STEP_STATS)}


class GradientProfileWarning(UserWarning):
    """The monitored ||dL/dh|| profile is vanishing or exploding (vgbench's verdict)."""


def _tag_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "root"


def tags(kind: str, names) -> list[str]:
    """TensorBoard tag suffixes of the layers (``kind="layer"``) or groups: ``layer_03_Dense_2``
    (numbered from 1, input to output, so that TensorBoard lists them in order)."""
    width = max(2, len(str(len(names))))
    return [f"{kind}_{i:0{width}d}_{_tag_name(n)}" for i, n in enumerate(names, start=1)]


def profile_warning(step: int, delta_row, layer_names) -> tuple[str | None, str | None]:
    """(verdict, one-line message or None) of one ``delta_norm`` row, by vgbench's thresholds
    (:func:`vgbench.verdict.classify`: the output layer left out)."""
    found, span, prof = verdict.classify(list(np.asarray(delta_row, np.float64)))
    if found not in ("vanishing", "exploding"):
        return found, None
    text = verdict.phrase(f"step {step}", found, span, prof, tuple(layer_names))
    if span:
        first, last = (int(v) - 1 for v in span.split("-"))
        text += f" ({layer_names[first]} to {layer_names[last]})"
    return found, f"vgbench monitor: {text}"


class Writer:
    """Write a :class:`vgbench.monitor.Monitor`'s ``stats`` every ``every`` steps.

    Args:
      logdir: directory of the event files and of ``layers.csv`` (one row per step x layer),
        ``groups.csv`` (per step x parameter group) and ``steps.csv`` (per step: loss,
        global gradient norm, verdict); the CSV files are started afresh.
      monitor: the :class:`Monitor` whose ``layer_names`` and ``group_names`` label the rows.
      every: write on steps that are multiples of ``every`` (:meth:`due`).
      tensorboard: write event files (needs tensorboardX: ``pip install vgbench[monitor]``).
      histograms: also a TensorBoard histogram of log10 ``delta_norm`` over the layers.
      wandb: also ``wandb.log`` the scalars (needs ``wandb`` and the user's ``wandb.init``).
      warn: a :class:`GradientProfileWarning` the first time the verdict is vanishing, and
        the first time it is exploding (not on every logging step of a minibatch-noisy
        profile that flickers between healthy and vanishing; ``steps.csv`` has every verdict).
    """

    def __init__(self, logdir, monitor, *, every: int = 1, tensorboard: bool = True,
                 histograms: bool = False, wandb: bool = False, warn: bool = True):
        if every < 1:
            raise ValueError(f"Writer: every={every} must be >= 1")
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.monitor, self.every = monitor, every
        self.histograms, self.warn = histograms, warn
        self.warned: set[str] = set()   # the verdicts warned of already
        self._tb = None
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as err:
                raise ImportError("Writer(tensorboard=True) needs tensorboardX: pip install "
                                  "'vgbench[monitor]' (or tensorboard=False for CSV only)") from err
            self._tb = SummaryWriter(logdir=str(self.logdir))
        self._wandb = None
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as err:
                raise ImportError("Writer(wandb=True) needs the wandb package") from err
            self._wandb = wandb_module
        self._csv: dict[str, tuple] = {}

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logging step (pass it as the monitor's ``measure``)."""
        return step % self.every == 0

    def __call__(self, step: int, stats: dict) -> bool:
        """Write ``stats`` (jax or numpy arrays) if ``step`` is due and they are not empty."""
        if not stats or not self.due(step):
            return False
        import jax

        values = {k: np.asarray(v, np.float64) for k, v in jax.device_get(stats).items()}
        self.write(int(step), values)
        return True

    def write(self, step: int, values: dict) -> None:
        """Write one step's numpy ``values`` everywhere, and warn of a new verdict."""
        layers = tuple(self.monitor.layer_names) if "delta_norm" in values else ()
        groups = tuple(self.monitor.group_names) if "grad_norm" in values else ()
        found = message = None
        if "delta_norm" in values:
            found, message = profile_warning(step, values["delta_norm"], layers)
        scalars = {k: float(values[k]) for k in STEP_STATS if k in values}
        for kind, names, stat_names in (("layer", layers, LAYER_STATS), ("group", groups, GROUP_STATS)):
            for stat in stat_names:
                if stat in values:
                    scalars.update({f"{stat}/{t}": float(v) for t, v in zip(tags(kind, names), values[stat])})
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, step)
            logs = np.log10(values.get("delta_norm", np.zeros(0)))
            if self.histograms and np.isfinite(logs).any():
                self._tb.add_histogram("log10_delta_norm", logs[np.isfinite(logs)], step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        self._write_csv(step, values, layers, groups, found)
        if self.warn and message and found not in self.warned:
            self.warned.add(found)
            warnings.warn(message, GradientProfileWarning, stacklevel=3)

    def _write_csv(self, step, values, layers, groups, found) -> None:
        names = {"layer": layers, "group": groups}
        for file, (axis, stat_names) in CSV_FILES.items():
            present = [s for s in stat_names if s in values]
            if not present:
                continue
            if axis is None:
                rows = [{"step": step, **{s: float(values[s]) for s in present}, "verdict": found or ""}]
            else:
                rows = [{"step": step, axis: i + 1, f"{axis}_name": n,
                         **{s: float(values[s][i]) for s in present}}
                        for i, n in enumerate(names[axis])]
            if file not in self._csv:
                handle = (self.logdir / file).open("w", newline="")
                self._csv[file] = (handle, csv.DictWriter(handle, fieldnames=list(rows[0])))
                self._csv[file][1].writeheader()
            handle, writer = self._csv[file]
            writer.writerows(rows)
            handle.flush()

    def close(self) -> None:
        """Flush and close the event and CSV files."""
        if self._tb is not None:
            self._tb.close()
        for handle, _ in self._csv.values():
            handle.close()
        self._csv.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_scalars(logdir):
    """Every scalar of the TensorBoard event files under ``logdir``: a tidy frame with columns
    ``tag``, ``step``, ``value``, ``wall_time``. Reads the record framing itself (checking each
    record's CRC) and the events with tensorboardX's protobuf classes: no TensorFlow."""
    import pandas as pd
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    rows = []
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
            if at + 16 + length > len(data):   # a record still being written
                break
            body = data[at + 12:at + 12 + length]
            (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
            if header_crc != masked_crc32c(header) or body_crc != masked_crc32c(body):
                raise ValueError(f"{path}: corrupt record at byte {at}")
            at += 16 + length
            event = event_pb2.Event.FromString(body)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    rows.append({"tag": value.tag, "step": event.step, "value": value.simple_value,
                                 "wall_time": event.wall_time})
    return pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
