"""Command line: thin wrappers that parse, build specs and call the library.

    vgbench train [--FIELD VALUE ...] [--seeds N|a,b,c] [--out FILE]
    vgbench diagnose --model NAME [--plugin FILE] [--task T | --data-dir X.npz] [--out FILE]
    vgbench list [AXIS]
    vgbench run GRID... [--results DIR] [...]        (vgbench.runner)
    vgbench report [--results DIR]                  (vgbench.report)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path


class UsageError(Exception):
    """A mistake in the command line: printed as one line, exit status 2."""


def parse_seeds(text: str) -> list[int]:
    """'3' means seeds 0, 1, 2; '0,5,9' names them (as a grid file's ``seeds``)."""
    from vgbench.spec import seeds_from

    try:
        value = [int(s) for s in text.split(",") if s.strip()] if "," in text else int(text)
        return list(seeds_from(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds takes a count (e.g. 3) or a comma-separated list of distinct seeds "
            f"(e.g. 0,5,9), got {text!r}") from None


SEEDS_HELP = "a count (3: seeds 0, 1, 2) or a comma-separated list (0,5,9); default: seed 0"


def _optional_float(text: str):
    return None if text.lower() in ("none", "null") else float(text)


def field_help(f: dataclasses.Field, axes: dict) -> str:
    """A flag's help: the field's meaning, its default, and for a registry field its names."""
    from vgbench import models

    text = f"{f.metadata['help']}; default: {f.default!r}"
    by_model = [f"{name}: {models.model_defaults(name)[f.name]!r}" for name in models.MODELS
                if f.name in models.model_defaults(name)]
    if by_model:
        text += f" ({', '.join(by_model)})"
    if f.name in axes:   # an entry with options shows them at their defaults: elu(alpha=1.0)
        reg = axes[f.name]
        text += f"; one of: {', '.join(reg.signature(name) for name in reg.names())}"
    return text


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per RunSpec field, underscores as dashes, typed like the field, with its meaning."""
    from vgbench import registry
    from vgbench.spec import RunSpec

    hints = typing.get_type_hints(RunSpec)
    axes = registry.axes()
    group = parser.add_argument_group("config fields (names as in grid files; "
                                      "`vgbench list AXIS` describes each name)")
    for f in dataclasses.fields(RunSpec):
        if not f.metadata.get("cli", True):
            continue
        hint = hints[f.name]
        base = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        kind = {int: int, float: float, str: str}[base]
        if base is float and type(None) in typing.get_args(hint):
            kind = _optional_float
        group.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
                           metavar=base.__name__.upper(), help=field_help(f, axes))


def spec_from_args(args: argparse.Namespace):
    from vgbench.spec import RunSpec, field_names

    given = {k: getattr(args, k) for k in field_names() if getattr(args, k, None) is not None}
    return RunSpec(**given)   # fields the flags leave out: the model's defaults, then RunSpec's


def cmd_train(args: argparse.Namespace) -> int:
    from vgbench import plugins, record, train

    plugins.load(args.plugin or [], where="--plugin")
    spec = spec_from_args(args)   # plugin_hash: the source hash of the plugins it names
    if args.out is not None and Path(args.out).is_dir():
        raise UsageError(f"--out {args.out!r} is a directory; give a file name such as run.json")
    program, raw = train.train(spec, args.seeds)
    rec = record.build_record(spec, args.seeds, raw.outputs, task=program.task,
                              layer_names=program.model.layer_names, compile_s=raw.compile_s,
                              run_s=raw.run_s, batch_split=program.split,
                              model_info=program.model.info)
    print(format_summary(rec))
    if args.out is not None:
        record.write_json_atomic(args.out, rec)
        print(f"record written to {args.out}")
    return 0


def _fmt(value, spec=".4g"):
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def _describe(config: dict) -> str:
    from vgbench import models

    names = models.facts(config["model"]).describe if config["model"] in models.MODELS else ()
    return " ".join(f"{key}={config[key]}" for key in names)


def format_summary(rec: dict) -> str:
    """A short per-seed table: status, final metrics, log10 attenuation at init and end."""
    cfg, m, s = rec["config"], rec["metrics"], rec["summary"]
    target = rec["target"]
    head = (f"run {rec['run_id']}  task={cfg['task']} model={cfg['model']} depth={cfg['depth']} "
            f"width={cfg['width']} activation={cfg['activation']} init={cfg['init']} "
            f"norm={cfg['norm']} skip={cfg['skip']}"
            + (f" {described}" if (described := _describe(cfg)) else "")
            + f"\n{cfg['steps']} steps, {cfg['optimizer']} lr={cfg['lr']}, clip={cfg['clip']}; "
            f"compile {rec['timing']['compile_s']:.1f}s, run {rec['timing']['run_s']:.1f}s; "
            f"baseline loss {m['task_baseline'][0]:.4g}; target {target['metric']} "
            f"{'>=' if target['higher_is_better'] else '<='} {target['value']:.4g}")
    metric_key = next((k for k in m if k.startswith("final_test_") and k != "final_test_loss"), None)
    cols = ["seed", "status", "train_loss", "test_loss"] + ([metric_key[6:]] if metric_key else []) + [
        "steps_to_target", "log10_att_init", "log10_att_final", "plateau"]
    rows = []
    for i, seed in enumerate(rec["seeds"]):
        status = rec["status"][i] + (f"@{rec['diverged_at_step'][i]}" if rec["diverged_at_step"][i] is not None else "")
        row = [str(seed), status, _fmt(m["final_train_loss"][i]), _fmt(m["final_test_loss"][i])]
        if metric_key:
            row.append(_fmt(m[metric_key][i]))
        row += [_fmt(m["steps_to_target"][i]), _fmt(s["log10_attenuation_init"][i], "+.2f"),
                _fmt(s["log10_attenuation_final"][i], "+.2f"),
                f"yes@{s['plateau_step'][i]}" if s["plateau"][i] else "no"]
        rows.append(row)
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(cols)]
    lines = [head, "  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    reached = sum(x is not None for x in m["steps_to_target"])
    lines.append(f"target reached by {reached} of {len(rec['seeds'])} seeds")
    for seed, text in zip(rec["seeds"], s.get("verdict") or []):   # vgbench.verdict
        lines.append(f"seed {seed}: {text}")
    return "\n".join(lines)


def cmd_diagnose(args: argparse.Namespace) -> int:
    """A model at initialization on one batch: per-layer table, verdict, record and figure."""
    from vgbench import diagnose, plugins, record, train, verdict

    plugins.load(args.plugin or [], where="--plugin")
    if args.task is None and args.data_dir and args.data_dir.endswith(".npz"):
        args.task = "npz"
    if args.model is None:
        raise UsageError("--model is required: a built-in model or one a --plugin registers "
                         "(see `vgbench list model`)")
    spec = spec_from_args(args)
    if spec.task == "npz" and args.batch_size is None:
        import numpy as np

        with np.load(spec.data_dir) as arrays:
            spec = spec.replace(batch_size=len(arrays["x"]))
    spec = spec.replace(steps=0)
    program, raw = train.train(spec, args.seeds)
    rec = record.build_record(spec, args.seeds, raw.outputs, task=program.task,
                              layer_names=program.model.layer_names, compile_s=raw.compile_s,
                              run_s=raw.run_s, batch_split=program.split, study="diagnose",
                              model_info=program.model.info)
    table = diagnose.record_table(rec, 0)
    print(f"model {spec.model} on task {spec.task}, batch {spec.batch_size}, at initialization "
          f"(seed {args.seeds[0]})")
    print(diagnose.format_table(table))
    from vgbench.models.flax_adapter import coverage  # what a flax entry's probes cover

    if coverage(spec.model) is not None:
        print(coverage(spec.model).line(spec.model))
    d = rec["diagnostics"]
    # an adapted entry's verdict reads the signal path its record names (not every layer in
    # program order: a second head or an attention's key is not depth), as the record's does
    probes = rec.get("probes") or {}
    path = verdict.path_indices(d["layer_names"], probes) or range(len(d["layer_names"]))
    from vgbench.diagnostics import exact_zeros

    for i, seed in enumerate(args.seeds):
        profile = d["delta_norm"][i][0]
        zero = exact_zeros(profile)   # no gradient reaches them: not part of the profile
        kept = [j for j in path if not zero[j]]
        v, span, prof = verdict.classify([profile[j] for j in kept])
        line = verdict.phrase("at init", v, span, prof, [d["layer_names"][j] for j in kept])
        if zero.any():
            line += (f"; exactly 0, no gradient (a zero-initialised scale or an unused output): "
                     f"{', '.join(n for n, z in zip(d['layer_names'], zero) if z)}")
        if d.get("time_delta_norm") is not None:   # recurrent: the profile over time
            over_time = diagnose.time_text(d["time_delta_norm"][i][0])
            line = over_time if v is None else f"{line}; {over_time}"
        print(f"seed {seed}: " + line)
    for what, field in (("off the signal path", "side_branches"),
                        ("not read by the output (no gradient)", "unused")):
        if probes.get(field):
            print(f"{what}: {', '.join(probes[field])}")
    out = Path(args.out)
    record.write_json_atomic(out, rec)
    figures = diagnose.plot_profile(table, out.with_suffix(".png"),
                                    title=f"{spec.model} on {spec.task}: ||dL/dh_l|| at init")
    print(f"record written to {out}; figure {', '.join(str(f) for f in figures)}")
    return 0


def list_axes() -> dict:
    """Axis name -> registry, one per registry (``recurrent_init`` lists as ``init``)."""
    from vgbench import registry

    return {reg.axis: reg for reg in registry.axes().values()}


def registry_of(axis: str):
    """The registry an axis or config field names; an unknown one is a UsageError."""
    from vgbench import registry

    table = {**registry.axes(), **list_axes()}
    if axis not in table:
        raise UsageError(f"unknown axis {axis!r}; valid axes: {', '.join(list_axes())}"
                         f"{registry.did_you_mean(axis, table)}")
    return table[axis]


def cmd_list(args: argparse.Namespace) -> int:
    from vgbench import plugins

    plugins.load(args.plugin or [], where="--plugin")
    for axis in ([args.axis] if args.axis else list(list_axes())):
        reg = registry_of(axis)
        print(f"{axis}:")
        shown = {name: reg.signature(name) for name in reg.names()}   # elu(alpha=1.0)
        width = max(len(text) for text in shown.values())
        for name, text in shown.items():
            print(f"  {text.ljust(width)}  {reg.summary(name)}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from vgbench import runner

    return runner.main(args)


def cmd_report(args: argparse.Namespace) -> int:
    from vgbench import report

    paths = report.build_report(Path(args.results))
    print(f"wrote {len(paths)} files under {args.results}")
    return 0


def cmd_finite_width(args: argparse.Namespace) -> int:
    from vgbench import finite_width
    from vgbench.report import finite_width as page

    if args.seeds < 2 or args.batch < 1:
        raise UsageError(f"--seeds must be at least 2 and --batch at least 1; got {args.seeds}, "
                         f"{args.batch}")
    finite_width.run(args.results, seeds=args.seeds, batch=args.batch)
    from vgbench.report.frames import load_frames

    runs = load_frames(Path(args.results)).runs if (Path(args.results) / "runs").is_dir() else None
    paths = page.write(Path(args.results), runs)
    print(f"wrote {args.results}/finite_width/init.csv and {len(paths)} files of its page")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vgbench.report import compare

    try:
        table = compare.compare_results(args.dir_a, args.dir_b)
    except (FileNotFoundError, ValueError) as err:
        print(f"vgbench compare: error: {err}", file=sys.stderr)
        return 2
    print(compare.summary_text(table, args.dir_a, args.dir_b))
    return 0 if table["agree"].all() else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vgbench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one config for several seeds and write its record")
    add_spec_arguments(p)
    p.add_argument("--seeds", type=parse_seeds, default=[0], help=SEEDS_HELP)
    p.add_argument("--out", default=None, help="write the run record (JSON) here")
    p.add_argument("--plugin", action="append", help="a plugin file or module to import first")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("diagnose", help="per-layer ||dL/dh|| and a verdict for one model at "
                       "initialization, on a task's batch or your own arrays (--data-dir X.npz)")
    add_spec_arguments(p)
    p.add_argument("--seeds", type=parse_seeds, default=[0], help=SEEDS_HELP)
    p.add_argument("--out", default="diagnose.json",
                   help="the run record (JSON); the figure goes beside it as .png and .pdf")
    p.add_argument("--plugin", action="append", help="a plugin file or module to import first")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("list", help="list the registered entries of one axis or all")
    p.add_argument("axis", nargs="?", default=None)
    p.add_argument("--plugin", action="append", help="a plugin file or module to import first")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="run benchmark grids (TOML files) into a results directory")
    try:
        from vgbench import runner

        runner.add_arguments(p)
    except ImportError:  # the runner is optional while it is being built
        pass
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="leaderboards, tables and figures from a results directory")
    p.add_argument("--results", default="results")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("finite-width", help="measure the spread of log lengths at initialization "
                       "against the exact finite-width law (results/finite_width/)")
    p.add_argument("--results", default="results")
    p.add_argument("--seeds", type=int, default=256, help="weight draws per network (default 256)")
    p.add_argument("--batch", type=int, default=32, help="training examples per draw (default 32)")
    p.set_defaults(func=cmd_finite_width)

    p = sub.add_parser("compare", help="do two results agree within their seed spread? (exit "
                       "status 1 if any setting does not)")
    p.add_argument("dir_a", help="a results directory (its runs/, else its reference/ files) or "
                   "a per-seed reference CSV file")
    p.add_argument("dir_b", help="another results directory or reference file")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"vgbench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
