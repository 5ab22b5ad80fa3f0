"""`align-track`: ingest a tree, show partition status, list runs. Same assets as the UI."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core.discovery import find_run_dirs
from .core.parse import parse_run_dir
from .core.sources import ParseError
from .defs.resources import default_data_dir, default_experiments_dir


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align-track", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = sub.add_parser("ingest", help="materialize new and changed run directories")
    _common(ingest)
    ingest.set_defaults(func=cmd_ingest)

    status = sub.add_parser("status", help="per partition: fresh / stale / missing / failed")
    _common(status)
    status.set_defaults(func=cmd_status)

    list_runs = sub.add_parser("list-runs", help="run path, ADM, alignment, scenario count")
    list_runs.add_argument("dir", type=Path)
    list_runs.set_defaults(func=cmd_list_runs)
    return parser


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--experiments-dir", type=Path, default=None,
                     help="tree root (env ALIGN_TRACK_EXPERIMENTS_DIR; default: bundled sample)")
    cmd.add_argument("--data-dir", type=Path, default=None,
                     help="output dir (env ALIGN_TRACK_DATA_DIR; default ./align-track-data)")
    cmd.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    experiments = (args.experiments_dir or Path(default_experiments_dir())).resolve()
    data = (args.data_dir or Path(default_data_dir())).resolve()
    if not experiments.is_dir():
        sys.exit(f"align-track: experiments dir not found: {experiments}")
    return experiments, data


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_ingest(args: argparse.Namespace) -> int:
    from .definitions import build_defs
    from .defs.ingest import ingest
    from .defs.instance import open_instance
    from .defs.progress import PROGRESS_RUN_CONFIG, progress_logger

    experiments, data = _dirs(args)
    defs = build_defs(str(experiments), str(data), loggers={"progress": progress_logger})
    with open_instance(data) as instance:
        report = ingest(defs, instance, experiments, data, progress=_say,
                        run_config=PROGRESS_RUN_CONFIG)
    if args.json:
        print(json.dumps(report.as_json()))
    else:
        print(f"discovered {report.discovered}: {len(report.materialized)} materialized, "
              f"{len(report.fresh)} fresh, {len(report.failed)} failed")
        for failure in report.failed:
            print(f"  FAILED {failure['partition']}: {failure['error']}")
        print(f"Parquet tables: {data / 'parquet'}")
    return 1 if report.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from .defs.freshness import partition_states
    from .defs.ingest import source_versions
    from .defs.instance import open_instance

    experiments, data = _dirs(args)
    run_dirs = find_run_dirs(experiments)
    with open_instance(data) as instance:
        states = partition_states(instance, source_versions(run_dirs, data))
    rows = [{"partition": r.key, "path": r.rel_path, "state": states[r.key]} for r in run_dirs]
    if args.json:
        counts = {s: sum(r["state"] == s for r in rows) for s in sorted(set(states.values()))}
        print(json.dumps({"partitions": rows, "counts": counts}))
    else:
        _table(["state", "partition"], [[r["state"], r["partition"]] for r in rows])
    return 0


def cmd_list_runs(args: argparse.Namespace) -> int:
    root = args.dir.resolve()
    rows = []
    for run_dir in find_run_dirs(root):
        try:
            parsed = parse_run_dir(run_dir, root)
        except ParseError as exc:
            rows.append([run_dir.rel_path, "ERROR", exc.problem, ""])
            continue
        for exp in parsed.experiments.to_pylist():
            rows.append([run_dir.rel_path, exp["adm"], exp["alignment_target_id"],
                         str(exp["num_scenarios"])])
    _table(["run path", "ADM", "alignment", "scenarios"], rows)
    return 0


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
