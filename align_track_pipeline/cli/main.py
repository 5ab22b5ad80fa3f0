"""`align-track`: ingest a tree, show partition status, list runs, and answer questions from
the tables (search, compare, report, export). Same assets as the UI."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import stat
import sys
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, redirect_stdout
from pathlib import Path

from align_track_pipeline.cli.ahead import Ahead, look_ahead
from align_track_pipeline.cli.analysis import add_commands
from align_track_pipeline.cli.arguments import folder, port, positive
from align_track_pipeline.cli.exits import PortInUse, Result, StoreUnreachable
from align_track_pipeline.cli.failures import describe
from align_track_pipeline.cli.signals import interrupts_recorded, raise_if_received
from align_track_pipeline.cli.stdout import discard_stdout, reader_gone
from align_track_pipeline.core.guard import (
    CONFIRM_FLAG,
    NEW_TREE_FLAG,
    check_apart,
    check_tree,
    removal_refusal,
    removals,
)
from align_track_pipeline.core.lifeline import stop_fork_server
from align_track_pipeline.core.locations import default_data_dir, default_experiments_dir
from align_track_pipeline.core.quiet import quiet_about
from align_track_pipeline.core.secrets import mask_text, without_credentials
from align_track_pipeline.core.settings import SettingError, current
from align_track_pipeline.core.source.discovery import (
    check_root,
    find_run_dirs,
    rel_path_of,
    scan_tree,
)
from align_track_pipeline.core.source.files import ParseError
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.aim.tracker import UI_PORT as AIM_UI_PORT
from align_track_pipeline.core.trackers.base import TargetError, Tracker
from align_track_pipeline.core.trackers.mlflow.tracker import UI_PORT as MLFLOW_UI_PORT
from align_track_pipeline.core.trackers.registry import Settings, create, create_all


def main(argv: list[str] | None = None) -> int:
    """With `--json`, stdout gets exactly one JSON object whatever happens: the result, or
    `{"error": ...}` with what is known of the result (an interrupt, a full disk, a bug)."""
    with interrupts_recorded() as received:
        args = _parser().parse_args(argv)
        as_json = getattr(args, "json", False)
        if (refused := _bad_settings(as_json)) is not None:
            return refused
        try:
            with (_quiet_dagster() if args.loads_dagster else nullcontext(),
                  _stdout_to_stderr(as_json)):
                code, result = args.func(args)
                raise_if_received("after the work was done")  # one a library swallowed
        except BaseException as exc:  # each kind is told apart in `describe`
            if reader_gone(exc):
                return discard_stdout()
            told = describe(exc, _stores(args), received.first())
            if told is None:  # a SystemExit with its own code
                raise
            if not told.expected:  # the traceback Python would print, without credentials
                print(mask_text(traceback.format_exc()), end="", file=sys.stderr)
            if told.expected or as_json:
                print(f"align-track: {told.error}", file=sys.stderr, flush=True)
            code = told.code
            result = getattr(args, "partial", dict)() | told.as_json() if as_json else None
    if result is not None:
        try:
            print(json.dumps(result, default=str), flush=True)
        except BrokenPipeError as exc:
            if not reader_gone(exc):
                raise
            return discard_stdout()
        except OSError as exc:  # stdout redirected to a full disk: told, not a traceback
            told = describe(exc, _stores(args))
            print(f"align-track: {told.error}", file=sys.stderr, flush=True)
            return told.code
    return code


def _bad_settings(as_json: bool) -> int | None:
    """Exit 2 when a variable holds a value its setting does not accept, naming it and what
    it accepts: checked before any command starts, so no command fails half-way on it."""
    try:
        current()
    except SettingError as exc:
        print(f"align-track: {exc}", file=sys.stderr, flush=True)
        if as_json:
            print(json.dumps({"error": str(exc)}), flush=True)
        return 2
    return None


def _stores(args: argparse.Namespace) -> list[Path]:
    """The local places a command writes: the file it was told to write (`-o`, `--html`),
    the data dir, then a store given outside it."""
    data = (getattr(args, "data_dir", None) or Path(default_data_dir())).resolve()
    options = _options(args)
    uri = options.get("mlflow_uri", "")
    outputs = [getattr(args, name, None) for name in ("output", "html")]
    outside = [options.get("aim_repo"), uri.removeprefix("sqlite:///")
               if uri.startswith("sqlite:///") else None]
    return [*(Path(p).resolve() for p in outputs if p and str(p) != "-"),
            *filter(None, [_stdout_file()]), data, *(Path(p) for p in outside if p)]


def _stdout_file() -> Path | None:
    """The file stdout is redirected to (`search --json > rows.json`), where Linux says."""
    try:
        if stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode):
            path = Path(os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}"))
            return path if path.exists() else None  # not an unlinked temporary file
    except (OSError, ValueError, AttributeError):  # no such file, a closed or odd stdout
        pass
    return None


@contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
    """With `--json`, stdout carries the one result object and nothing else: whatever runs
    meanwhile prints (a library's messages, a worker process's output) goes to stderr,
    at the Python level and at the file-descriptor level (child processes)."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _quiet_dagster() -> AbstractContextManager:
    """Binding resources to sensors, Dagster 1.13 warns about its own beta `owners` argument:
    noise on a user's terminal, nothing they can act on. Without importing Dagster: `ingest`
    looks ahead before it does (`cli.ahead`)."""
    return quiet_about(Warning, message="Parameter `owners`")


TREE_HELP = ("tree root (env ALIGN_TRACK_EXPERIMENTS_DIR; default: the tree the data dir was "
             "built from, else the bundled sample)")
DATA_DIR_HELP = "the data dir (env ALIGN_TRACK_DATA_DIR; default ./align-track-data)"
PORT_HELP = "port to listen on, bound to 127.0.0.1 (default %(default)s)"
STORE_HELP = {
    "--aim-repo": "Aim repo (env ALIGN_TRACK_AIM_REPO; default <data dir>/aim)",
    "--mlflow-uri": "tracking URI (env MLFLOW_TRACKING_URI; default sqlite in the data dir; "
                    "an http(s):// server serves its own UI)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align-track", description=__doc__)
    parser.set_defaults(loads_dagster=True)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = sub.add_parser("ingest", help="materialize new and changed run directories")
    _common(ingest)
    _tracker_options(ingest)
    ingest.add_argument("--workers", type=positive, default=None, metavar="N",
                        help="spread each tracker's partitions over N processes (default: as "
                        "many as its store takes, Aim one per core and one more, for phases "
                        "of 32 partitions per process or more; the tables are parsed by a "
                        "pool of their own)")
    ingest.add_argument(CONFIRM_FLAG, action="store_true",
                        help="remove the partitions whose folder is gone (and their runs) "
                        "even when that is more than 20%% of them and more than 5, or all")
    ingest.set_defaults(func=cmd_ingest)

    status = sub.add_parser("status", help="per partition: fresh / stale / missing / failed "
                            "/ unreadable / gone (exit 2 where ingest would refuse removals)")
    _common(status)
    _tracker_options(status)
    status.set_defaults(func=cmd_status)

    _store_command(sub, "aim-ui", "start `aim up` on the Aim repo (127.0.0.1)", "--aim-repo",
                   cmd_aim_ui).add_argument("--port", type=port, default=AIM_UI_PORT,
                                            help=PORT_HELP)
    _store_command(sub, "aim-reindex", "bring the Aim repo index up to date", "--aim-repo",
                   cmd_aim_reindex).add_argument("--full", action="store_true",
                                                 help="rebuild the whole index (slow)")
    _store_command(sub, "mlflow-ui", "start the MLflow UI on the store (127.0.0.1)",
                   "--mlflow-uri", cmd_mlflow_ui).add_argument("--port", type=port,
                                                                 default=MLFLOW_UI_PORT,
                                                                 help=PORT_HELP)

    dagster_ui = sub.add_parser("dagster-ui", help="start the Dagster UI and daemon (127.0.0.1)")
    dagster_ui.add_argument("--experiments-dir", type=folder, default=None, help=TREE_HELP)
    dagster_ui.add_argument("--data-dir", type=folder, default=None, help=DATA_DIR_HELP)
    dagster_ui.add_argument("--port", type=port, default=3000, help=PORT_HELP)
    _new_tree_option(dagster_ui)
    dagster_ui.set_defaults(func=cmd_dagster_ui)

    home = sub.add_parser("dagster-home", help="write the Dagster instance home's config "
                          "(for dagster dev / dagster-daemon) and print the home's path")
    home.add_argument("--data-dir", type=folder, default=None, help=DATA_DIR_HELP)
    home.set_defaults(func=cmd_dagster_home, loads_dagster=False)

    config = sub.add_parser("config", help="show every setting's effective value and its "
                            "source (env, option, derived or default), secrets masked")
    config.add_argument("--data-dir", type=folder, default=None, help=DATA_DIR_HELP)
    config.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    config.set_defaults(func=cmd_config, loads_dagster=False)

    list_runs = sub.add_parser("list-runs", help="run path, ADM, alignment, scenario count")
    list_runs.add_argument("dir", type=folder, help="an experiment-data tree")
    list_runs.set_defaults(func=cmd_list_runs)
    add_commands(sub)
    return parser


def _store_command(sub, name: str, help_: str, store_option: str, func):
    """A command on one store of the data dir (`--data-dir` plus the store's own option)."""
    cmd = sub.add_parser(name, help=help_)
    cmd.add_argument("--data-dir", type=folder, default=None, help=DATA_DIR_HELP)
    cmd.add_argument(store_option, default=None, help=STORE_HELP[store_option])
    cmd.set_defaults(func=func)
    return cmd


def _common(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--experiments-dir", type=folder, default=None, help=TREE_HELP)
    cmd.add_argument("--data-dir", type=folder, default=None, help=DATA_DIR_HELP)
    cmd.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _new_tree_option(cmd)


def _new_tree_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(NEW_TREE_FLAG, action="store_true",
                     help="accept a tree other than the one the data dir was built from, and "
                     "remember it from now on (without it, another tree is refused)")


def _tracker_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--mlflow-uri", default=None,
                     help="tracking URI (env MLFLOW_TRACKING_URI; default sqlite in data dir)")
    cmd.add_argument("--mlflow-experiment", default=None,
                     help="MLflow experiment name (default align-system)")
    cmd.add_argument("--flat", action="store_true", default=None,
                     help="one MLflow run per experiment instead of parent + scene runs")
    cmd.add_argument("--aim-repo", default=None,
                     help="Aim repo (env ALIGN_TRACK_AIM_REPO; default <data dir>/aim)")
    cmd.add_argument("--trackers", default=None, metavar="NAME,...",
                     help="write only these trackers, e.g. aim (env ALIGN_TRACK_TRACKERS; "
                          "default: every registered one)")


def _options(args: argparse.Namespace) -> dict[str, str]:
    """The tracker options given on the command line (they win over the environment)."""
    given = {"mlflow_uri": getattr(args, "mlflow_uri", None),
             "mlflow_experiment": getattr(args, "mlflow_experiment", None),
             "flat": "1" if getattr(args, "flat", None) else None,
             "aim_repo": getattr(args, "aim_repo", None),
             "trackers": getattr(args, "trackers", None)}
    return {k: v for k, v in given.items() if v}


def _settings(args: argparse.Namespace, data: Path) -> Settings:
    return Settings(data, _options(args))


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The tree and the data dir; refuses (`Refusal`) a tree the data dir was not built from,
    unless --new-tree, and a tree that is missing or cannot be read (`TreeUnreadable`)."""
    data = (args.data_dir or Path(default_data_dir())).resolve()
    experiments = (args.experiments_dir or Path(default_experiments_dir(data))).resolve()
    check_apart(data, experiments)
    check_tree(data, experiments, getattr(args, "new_tree", False))
    check_root(experiments)  # a missing or unreadable root is never read as an empty one
    return experiments, data


UNREADABLE = "unreadable"  # a partition whose folder, or one above it, cannot be read
GONE = "gone"  # a partition whose folder left the tree, its data still in the stores
GONE_ERROR = ("its folder is no longer in the tree; the next `ingest` removes its data from "
              "every store")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_ingest(args: argparse.Namespace) -> Result:
    experiments, data = _dirs(args)
    trackers = create_all(_settings(args, data))  # refuses a bad target before any write
    ahead = look_ahead(experiments, data, workers=args.workers != 1)  # before Dagster's imports
    try:
        return _ingest(args, experiments, data, trackers, ahead)
    finally:
        stop_fork_server()  # one `look_ahead` started and no worker used


def _ingest(args: argparse.Namespace, experiments: Path, data: Path, trackers: list[Tracker],
            ahead: Ahead) -> Result:
    from align_track_pipeline.cli.ingest import IngestReport, ingest
    from align_track_pipeline.cli.instance import open_instance
    from align_track_pipeline.cli.progress import PROGRESS_RUN_CONFIG, progress_logger
    from align_track_pipeline.cli.sizing import most_writers
    from align_track_pipeline.cli.workers import Setup, parallel_for
    from align_track_pipeline.definitions import build_defs

    defs = build_defs(str(experiments), str(data), _options(args),
                      loggers={"progress": progress_logger})
    setup = Setup(str(experiments), str(data), _options(args), PROGRESS_RUN_CONFIG)
    report = IngestReport()
    args.partial = report.as_json  # what `--json` prints with the error if the ingest stops
    parallel = parallel_for(setup, args.workers, most_writers(trackers))
    with open_instance(data) as instance:
        ingest(defs, instance, experiments, trackers, progress=_say,
               run_config=PROGRESS_RUN_CONFIG, parallel=parallel,
               confirm_removals=args.confirm_removals, report=report, ahead=ahead)
    code = 1 if report.failed or report.analysis_failed else 0
    if args.json:
        return code, report.as_json()
    print(f"discovered {report.discovered}: {len(report.materialized)} materialized, "
          f"{len(report.fresh)} fresh, {len(report.failed)} failed, "
          f"{len(report.removed)} removed")
    if report.changed:
        print(f"  {len(report.changed)} changed while they were read, ingested again on the "
              f"next pass: {', '.join(report.changed)}")
    for failure in report.failed:
        print(f"  FAILED {failure['partition']}: {failure['error']}")
    if report.analysis_failed:
        print(f"  FAILED analysis (the comparison file and the dashboard, left as they were): "
              f"{report.analysis_failed}")
    print(f"Parquet tables: {data / 'parquet'}")
    for tracker in trackers:
        options = _given(args, "data_dir", _STORE.get(tracker.name))
        print(f"{tracker.name}: {tracker.ui_hint(options)}")
    if args.experiments_dir or args.data_dir:
        print(f"each partition's state: `align-track status"
              f"{_given(args, 'experiments_dir', 'data_dir')}`")
    return code, None


# The option that names each tracker's store, for the hints that repeat it.
_STORE = {"mlflow": "mlflow_uri", "aim": "aim_repo"}


def _given(args: argparse.Namespace, *dests: str | None) -> str:
    """These options as given on the command line (credentials masked, quoted for a shell),
    for a hint the user can paste: the command it names then reads the same tree and stores."""
    parts = []
    for dest in filter(None, dests):
        if (value := getattr(args, dest, None)) is not None:
            parts += [f"--{dest.replace('_', '-')}", shlex.quote(mask_text(str(value)))]
    return "".join(f" {p}" for p in parts)


def cmd_status(args: argparse.Namespace) -> Result:
    from align_track_pipeline.cli.ingest import PARTITIONS, all_expected, source_versions
    from align_track_pipeline.cli.instance import never_ingested, open_instance
    from align_track_pipeline.cli.reasons import problems
    from align_track_pipeline.defs.freshness import FAILED, FRESH, MISSING, STALE, partition_states
    from align_track_pipeline.defs.resources import DataStore

    experiments, data = _dirs(args)
    scan = scan_tree(experiments)
    trackers = create_all(_settings(args, data))
    expected = all_expected(trackers)
    states, told = {r.key: MISSING for r in scan.run_dirs}, {}
    plan, known = removals([], scan), []
    if never_ingested(data):  # read as it is: nothing to open, nothing created
        _say(f"nothing has been ingested into {data} yet: every partition is missing "
             f"(`align-track ingest{_given(args, 'experiments_dir', 'data_dir')}` writes them)")
    else:
        with open_instance(data) as instance:
            states = partition_states(instance, source_versions(scan.run_dirs, data), expected)
            known = instance.get_dynamic_partitions(PARTITIONS)
            plan = removals(known, scan)
            told = problems(instance, DataStore(data_dir=str(data)), states, expected, trackers)
    rows = [{"partition": r.key, "path": r.rel_path, "state": states[r.key]} for r in scan.run_dirs]
    for row in rows:
        if row["partition"] in told:
            row["state"], row["error"] = told[row["partition"]]
    rows += [{"partition": k, "path": rel_path_of(k), "state": UNREADABLE, "error": reason}
             for k, reason in plan.hidden.items()]
    rows += [{"partition": k, "path": rel_path_of(k), "state": GONE, "error": GONE_ERROR}
             for k in plan.gone]
    order = (FRESH, STALE, MISSING, FAILED, UNREADABLE, GONE)
    counts = {s: sum(r["state"] == s for r in rows) for s in order}
    # What `ingest` would refuse to remove: exit 2, as it would (an unmounted share).
    refused = removal_refusal(experiments, len(known), plan.gone, len(scan.run_dirs))
    code = 2 if refused else 0
    if args.json:
        return code, {"partitions": rows, "counts": counts, "total": len(rows)} | (
            {"error": refused} if refused else {})
    _table(["state", "partition"], [[r["state"], r["partition"]] for r in rows])
    for row in rows:
        if "error" in row and row["state"] != GONE:
            print(f"  {row['state'].upper()} {row['partition']}: {row['error']}")
    print(f"{len(rows)} partitions: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if plan.gone:
        print(f"  {len(plan.gone)} gone: their folders are no longer in the tree; the next "
              "`ingest` removes their data from every store")
    if refused:
        _say(f"align-track status: {refused}")
    return code, None


def cmd_dagster_ui(args: argparse.Namespace) -> Result:
    """`dg dev` (the UI and the daemon) on the instance `ingest` uses, seeded with the project's
    dagster.yaml first (no welcome modal, no telemetry), over the same tree and data dir."""
    from align_track_pipeline.cli.instance import prepare_home

    experiments, data = _dirs(args)
    _check_port_free(args.port)  # `dg dev` would run its daemon on without its web server
    home = str(prepare_home(data))
    os.environ["DAGSTER_HOME"] = home
    os.environ["ALIGN_TRACK_DATA_DIR"] = str(data)
    os.environ["ALIGN_TRACK_EXPERIMENTS_DIR"] = str(experiments)
    # From the home: Dagster warns about a dagster.yaml in the folder it starts in that is not
    # the home's (this repository's top-level one, when started from a checkout).
    os.chdir(home)
    return _serve("Dagster", ["dg", "dev", "-m", "align_track_pipeline.definitions"], args.port,
                  home)


def cmd_mlflow_ui(args: argparse.Namespace) -> Result:
    """`mlflow server` bound to loopback, on the same store `ingest` writes: one worker and no
    job runner (they only serve writes this UI never makes), about a sixth of the default's
    memory. Prints the experiment's runs list, its parents-only view and its Traces tab when
    it exists. MLflow's assistant stays local-only (`environment.py`). A tracking server
    (`http(s)://`) serves the UI itself: its addresses are printed, nothing is started (an
    `mlflow server` cannot take another server as its store)."""
    from align_track_pipeline.core.trackers.mlflow.lookup import experiment_id, is_sql
    from align_track_pipeline.core.trackers.mlflow.tracker import (
        parents_only_url,
        runs_url,
        traces_url,
    )
    from align_track_pipeline.core.trackers.mlflow.writer import prepare_store

    data = (args.data_dir or Path(default_data_dir())).resolve()
    tracker = create("mlflow", _settings(args, data))
    served = not is_sql(tracker.tracking_uri)  # a tracking server serves its own UI
    if not served:
        _check_port_free(args.port)  # before addresses that would show another UI's store
    with _opening_store(tracker.tracking_uri):
        if not served:  # not while an ingest creates it: the server migrates
            prepare_store(tracker.tracking_uri, tracker.artifact_root)
        found = experiment_id(tracker.tracking_uri, tracker.experiment)
    ui = tracker.ui_url if served and tracker.ui_url else f"http://127.0.0.1:{args.port}"
    if served:
        print(f"The store is a tracking server, which serves the MLflow UI itself: {ui}",
              file=sys.stderr)
    if found:
        print(f"Runs, scene runs under their experiment's: {runs_url(ui, found)}\n"
              f"Experiments, one row each: {parents_only_url(ui, found)}\n"
              f"Traces, one per scene: {traces_url(ui, found)}", file=sys.stderr)
    else:
        print(f"Experiment {tracker.experiment!r} not written yet: run `align-track ingest`",
              file=sys.stderr)
    if served:
        return 0, None
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # The store from the environment, not the command line: `ps` shows a command line
    # (with any password in the URI) to every user of the host.
    os.environ["MLFLOW_BACKEND_STORE_URI"] = tracker.tracking_uri
    return _serve("MLflow", ["mlflow", "server", "--workers", "1"], args.port,
                  without_credentials(tracker.tracking_uri))


@contextmanager
def _opening_store(uri: str) -> Iterator[None]:
    """A store that cannot be opened (a database or tracking server down, credentials
    refused) is one line naming it and the reason, not a library's traceback. A database
    server that never answers gives up after UI_LOOKUP_SECONDS (libpq's own setting; it has
    no limit otherwise), a tracking server too (`experiment_id`)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from align_track_pipeline.core.trackers.mlflow.lookup import UI_LOOKUP_SECONDS

    limit = "PGCONNECT_TIMEOUT" not in os.environ
    if limit:
        os.environ["PGCONNECT_TIMEOUT"] = str(UI_LOOKUP_SECONDS)
    try:
        yield
    except (OperationalError, MlflowException, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StoreUnreachable(mask_text(f"cannot open the MLflow store "
                                         f"{without_credentials(uri)}: {reason}")) from exc
    finally:
        if limit:  # the server started next keeps libpq's default
            del os.environ["PGCONNECT_TIMEOUT"]


def cmd_aim_ui(args: argparse.Namespace) -> Result:
    """`aim up` bound to loopback, on the repo `ingest` writes: one worker, no telemetry."""
    data = (args.data_dir or Path(default_data_dir())).resolve()
    repo = create("aim", _settings(args, data)).repo
    _check_port_free(args.port)
    os.environ["AIM_UI_TELEMETRY_ENABLED"] = "0"
    return _serve("Aim", [sys.executable, "-m", "align_track_pipeline.core.trackers.aim.ui",
                          "--repo", repo, "--workers", "1", "-y"], args.port, repo)


def _serve(what: str, cmd: list[str], port: int, store: str) -> Result:
    """Become the UI server (so signals reach it directly), on 127.0.0.1 only; each command
    has checked that `port` is free (`_check_port_free`) before it printed anything."""
    argv = [str(Path(sys.executable).parent / cmd[0]), *cmd[1:], "--host", "127.0.0.1",
            "--port", str(port)]
    print(f"{what} UI on http://127.0.0.1:{port} ({store})", file=sys.stderr)
    os.execv(argv[0], argv)
    return 0, None  # not reached: execv replaced the process


def _check_port_free(port: int) -> None:
    """Refuse (PortInUse) a port something already listens on at 127.0.0.1."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed one may linger
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(f"port {port} on 127.0.0.1 is taken ({exc.strerror}), perhaps by "
                            "another UI: nothing was started. Stop it, or pass --port N") from exc


def cmd_aim_reindex(args: argparse.Namespace) -> Result:
    """Run the `aim_reindex` job in-process, recorded in the Dagster instance."""
    from align_track_pipeline.cli.batches import InProcess
    from align_track_pipeline.cli.instance import open_instance
    from align_track_pipeline.cli.progress import PROGRESS_RUN_CONFIG, progress_logger
    from align_track_pipeline.definitions import build_defs

    data = (args.data_dir or Path(default_data_dir())).resolve()
    repo = Path(create("aim", _settings(args, data)).repo)
    if not (repo / ".aim").is_dir():  # a typo'd data dir or repo: no empty repo made there
        raise TargetError(f"no Aim repo at {repo} yet: nothing to index (`align-track ingest` "
                          "writes it)")
    defs = build_defs(data_dir=str(data), options=_options(args),
                      loggers={"progress": progress_logger})
    with open_instance(data) as instance:
        result = InProcess(defs, instance, PROGRESS_RUN_CONFIG).run(
            "aim_reindex", {"ops": {"aim_index": {"config": {"full": args.full}}}},
            raise_on_error=False)
    return (0 if result.success else 1), None


def cmd_dagster_home(args: argparse.Namespace) -> Result:
    """`DAGSTER_HOME=$(align-track dagster-home) dagster dev`: the UI and the daemon on the
    instance `align-track` uses (Postgres when ALIGN_TRACK_POSTGRES_URL is set)."""
    from align_track_pipeline.cli.instance import prepare_home

    print(prepare_home((args.data_dir or Path(default_data_dir())).resolve()))
    return 0, None


def cmd_config(args: argparse.Namespace) -> Result:
    from align_track_pipeline.cli.config import effective

    data = (args.data_dir or Path(default_data_dir())).resolve()
    settings = effective(data, args.data_dir is not None)
    if args.json:
        return 0, {"settings": settings}
    _table(["variable", "value", "source"],
           [[name, s["value"], s["source"]] for name, s in settings.items()])
    return 0, None


def cmd_list_runs(args: argparse.Namespace) -> Result:
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
    return 0, None


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
