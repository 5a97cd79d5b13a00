"""The `harness` command: `run` tasks on models, `list` the tasks.

Errors a user can cause end in one line naming the fix and exit status 2; `--debug`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from harness.engine.bundled import BUNDLED, DEFAULT_MODEL
from harness.engine.models import DTYPES, LoadOptions, parse_max_memory
from harness.errors import UsageError


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UsageError(f"{message} (see harness {self.prog.split()[-1]} --help)")


def batch_size(text: str) -> int | str:
    return text if text == "auto" else positive_int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="harness", description="Interpretability experiments on language models, as a benchmark.")
    sub = parser.add_subparsers(dest="command", parser_class=ArgumentParser)
    run = sub.add_parser("run", help="run tasks on models and write results files")
    run.add_argument(
        "--model",
        action="append",
        help=f"bundled alias ({', '.join(BUNDLED)}), hub id, local folder or .gguf file; repeatable (default {DEFAULT_MODEL})",
    )
    run.add_argument("--task", action="append", required=True, help="task name, repeatable, or 'all'")
    run.add_argument(
        "--task-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option (validated against the task's config); TASK:KEY=VALUE targets one task",
    )
    run.add_argument(
        "--output-dir", type=Path, default=Path("results"), help="results folder, one subfolder per model (default results/)"
    )
    run.add_argument("--seed", type=int, default=0, help="seed of every random choice, 0 to 2**32-1 (default 0)")
    run.add_argument("--limit", type=positive_int, default=None, help="use only the first N problems (for quick checks)")
    run.add_argument("--batch-size", type=batch_size, default="auto", help="prompts per forward pass, or auto (default)")
    run.add_argument(
        "--preset",
        default=None,
        metavar="NAME",
        help="a named option set of every task: quick (sized for a laptop CPU, its own config hash)",
    )
    run.add_argument(
        "--max-memory",
        action="append",
        default=[],
        metavar="DEVICE=SIZE",
        help="with --device-map: the most memory a device may take, e.g. 0=20GiB, cpu=64GiB; repeatable",
    )
    run.add_argument(
        "--bootstrap",
        type=positive_int,
        default=1000,
        help="bootstrap resamples behind every interval, 100 to 100000 (default 1000)",
    )
    run.add_argument("--dtype", choices=list(DTYPES), default="auto", help="auto: bfloat16 on CUDA, float32 on CPU")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--device-map", default=None, help="auto: spread a large model over the GPUs (accelerate)")
    run.add_argument("--revision", default=None, help="hub branch, tag or commit")
    run.add_argument("--load-in-4bit", action="store_true", help="bitsandbytes 4-bit weights (CUDA only)")
    run.add_argument("--load-in-8bit", action="store_true", help="bitsandbytes 8-bit weights (CUDA only)")
    run.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own Python code (off by default)")
    run.add_argument("--log-samples", action="store_true", help="write per-example records to samples.jsonl")
    run.add_argument("--force", action="store_true", help="run again even when a finished result exists")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="load nothing: print each task's forward and generated tokens, activation memory and analysis time",
    )
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    lst = sub.add_parser("list", help="list the tasks, with paper and version; `list TASK` shows its options and metrics")
    lst.add_argument("task", nargs="?", help="a task name: print its options (name, type, default, description) and metrics")
    lst.add_argument("--debug", action="store_true")
    val = sub.add_parser("validate", help="check results files against the shipped schema, one line per problem")
    val.add_argument("files", nargs="+", type=Path, metavar="FILE")
    val.add_argument("--debug", action="store_true")
    board = sub.add_parser("leaderboard", help="build, show and publish leaderboards from results files")
    board_sub = board.add_subparsers(dest="action", parser_class=ArgumentParser, required=True)
    build = board_sub.add_parser(
        "build", help="validate results files and write leaderboards/<task>.json, index.json, index.html"
    )
    build.add_argument("--results", type=Path, default=Path("results"), help="folder of results files (default results/)")
    build.add_argument("--out", type=Path, default=Path("leaderboards"))
    show = board_sub.add_parser("show", help="print a task's leaderboard")
    show.add_argument("--task", required=True)
    show.add_argument("--dir", type=Path, default=Path("leaderboards"))
    pub = board_sub.add_parser("publish", help="copy to a folder or git work tree, or upload to hf://datasets/ORG/NAME")
    pub.add_argument("--to", required=True)
    pub.add_argument("--dir", type=Path, default=Path("leaderboards"))
    pub.add_argument("--dry-run", action="store_true", help="list the files that would be sent, send nothing")
    export = board_sub.add_parser(
        "export", help="write the results as one table (a row per model, task and metric) in CSV or Parquet"
    )
    export.add_argument(
        "--dir", type=Path, default=Path("leaderboards"), help="a leaderboard folder, a folder of results files or one file"
    )
    export.add_argument("--out", type=Path, required=True, help="the table to write: .csv or .parquet")
    export.add_argument("--format", choices=("csv", "parquet"), default=None, help="default: from the suffix of --out")
    for p in (build, show, pub, export):
        p.add_argument("--debug", action="store_true")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from harness.run.runner import RunSpec, run

    spec = RunSpec(
        models=args.model or [DEFAULT_MODEL],
        tasks=args.task,
        task_args=args.task_arg,
        output_dir=args.output_dir,
        seed=args.seed,
        limit=args.limit,
        batch_size=args.batch_size,
        bootstrap=args.bootstrap,
        load=LoadOptions(
            dtype=args.dtype,
            device=args.device,
            device_map=args.device_map,
            revision=args.revision,
            load_in_4bit=args.load_in_4bit,
            load_in_8bit=args.load_in_8bit,
            trust_remote_code=args.trust_remote_code,
            show_progress=False if args.no_progress else None,
            max_memory=parse_max_memory(args.max_memory),
        ),
        preset=args.preset,
        log_samples=args.log_samples,
        force=args.force,
        show_progress=False if args.no_progress else None,
    )
    if args.dry_run:
        from harness.run.estimate import estimate, format_estimates

        print(format_estimates(estimate(spec)))
        return 0
    run(spec, report=report)
    return 0


def report(line: str) -> None:
    """Print a progress line; a reader that went away (`harness run ... | head`) must not stop the run and lose its work."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def cmd_list(args: argparse.Namespace) -> int:
    from harness.api.registry import all_tasks, get_task, origin

    if args.task:
        print(describe_task(get_task(args.task)))
        return 0
    rows = [(t.name, t.version, origin(t.name), t.paper) for t in all_tasks().values()]
    widths = [max(len(r[i]) for r in rows + [("task", "version", "from", "")]) for i in range(3)]
    print(f"{'task':<{widths[0]}}  {'version':<{widths[1]}}  {'from':<{widths[2]}}  paper")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0


def describe_task(task: type) -> str:
    """`harness list TASK`: what the task measures, its options and its metrics."""
    from harness.api.task import describe_options

    lines = (
        [f"{task.name} (version {task.version})", f"paper: {task.paper}"]
        if task.paper
        else [f"{task.name} (version {task.version})"]
    )
    if task.description:
        lines.append(task.description)
    rows = describe_options(task)
    lines.append("")
    lines.append("options (--task-arg KEY=VALUE; lists comma-separated):" if rows else "options: none")
    for r in rows:
        lines.append(f"  {r.name}  ({r.type}, default {r.default})")
        if r.help:
            lines.append(f"      {r.help}")
    if task.metric_descriptions:
        lines.append("")
        lines.append("metrics (each with a 95% bootstrap interval and n):")
        width = max(len(k) for k in task.metric_descriptions)
        lines.extend(f"  {k:<{width}}  {v}" for k, v in task.metric_descriptions.items())
    finding = getattr(task, "finding", None)
    if finding is not None:
        lines.append("")
        lines.append(f"finding (the leaderboard's verdict; holds only when every facet holds): {finding.claim}")
        facets = finding.facets or ()
        for f in facets:
            control = f.control if isinstance(f.control, str) else f"{f.control:g}"
            lines.append(f"  {f.kind}: {f.effect}'s interval clears {control}")
            if f.claim:
                lines.append(f"      {f.claim}")
        if not facets:
            lines.append(f"  {finding.effect}'s interval clears {finding.control}")
    return "\n".join(lines)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check results files against the shipped JSON Schema; exit 1 when any file has a problem."""
    from harness.results.validate import validate_file

    bad = 0
    for path in args.files:
        problems = validate_file(path)
        for problem in problems:
            print(f"{path}: {problem}")
        if not problems:
            print(f"{path}: ok")
        bad += bool(problems)
    return 1 if bad else 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.report import build as leaderboard
    from harness.report import publish

    if args.action == "build":
        if not args.results.is_dir():
            raise UsageError(f"no results folder {args.results}: run `harness run` first or pass --results DIR")
        report = leaderboard.build(args.results, args.out)
        for path, reason in report.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(
            f"built {len(report.tasks)} leaderboard(s) from {len(report.used)} results file(s) in {args.out}: {', '.join(report.tasks) or 'none'}"
        )
        return 0
    if args.action == "export":
        from harness.report.table import export

        rows = export(args.dir, args.out, args.format)
        print(f"wrote {rows} rows to {args.out}")
        return 0
    if args.action == "show":
        data = leaderboard.read_board(args.dir, args.task)
        for board in data["boards"]:
            print(f"{data['task']} (version {board['task_version']}, config {board['config_hash']})")
            print(leaderboard.format_table(board))
            print()
        return 0
    sent = publish.publish(args.dir, args.to, dry_run=args.dry_run)
    verb = "would send" if args.dry_run else "sent"
    print(f"{verb} {len(sent)} file(s) to {args.to}")
    for rel in sent if args.dry_run else []:
        print(f"  {rel}")
    return 0


def one_line(message: str) -> str:
    """An error that echoes the user's input stays one line: control characters (a newline in a --task-arg) show escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return {"run": cmd_run, "list": cmd_list, "validate": cmd_validate, "leaderboard": cmd_leaderboard}[args.command](args)
    except UsageError as e:
        if debug:
            raise
        print(f"harness: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted; finished results are kept, run the same command again to complete", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `harness list | head`: the reader left; nothing more to say to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 141


if __name__ == "__main__":
    sys.exit(main())
