"""The team deployment (deploy/): its files parse and name commands that exist, and the very
commands of docker-compose.yaml, run here as local processes on one Postgres (the Dagster
instance through ALIGN_TRACK_POSTGRES_URL, MLflow's database beside it), ingest a run
directory dropped into the tree into Parquet, MLflow (through the server) and Aim.

Docker and Kubernetes are not available here: the image and the Helm chart are not run, only
their files checked (see docs/team.md)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from align_track_pipeline.core.tables.store import ParquetStore
from tests.conftest import (
    REPO,
    SAMPLE_TREE,
    _free_port,
    aim_runs_seen_by_a_fresh_process,
    item_count,
    mlflow_scenes_finished,
    stop_server,
    wait_http,
)

DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
IMAGE_SERVICES = ("code-server", "dagster-webserver", "dagster-daemon", "mlflow", "aim-up",
                  "aim-server")
BOUND_SECONDS = 300
PASSWORD = "team-s3cret"  # in the URL only; trust auth here, so never checked, only looked for


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def _command(service: str) -> list[str]:
    return list(_compose()["services"][service]["command"])


def _local(argv: list[str], **values: str) -> list[str]:
    """The compose command with the value of each given option replaced (`h="127.0.0.1"` for
    `-h`, `port=...` for `--port`): the same program, subcommand and flags, here."""
    out = list(argv)
    for name, value in values.items():
        option = f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"
        out[out.index(option) + 1] = value
    return [str(BIN / out[0]), *out[1:]]


def test_every_deploy_yaml_parses_and_names_the_services():
    files = sorted(DEPLOY.rglob("*.yaml"))
    assert [p.relative_to(DEPLOY).as_posix() for p in files] == [
        "dagster.yaml", "docker-compose.yaml", "helm/values.yaml", "workspace.yaml"]
    parsed = {p.name: yaml.safe_load(p.read_text()) for p in files}
    assert set(_compose()["services"]) == {"postgres", *IMAGE_SERVICES}
    instance = parsed["dagster.yaml"]
    assert instance["storage"]["postgres"]["postgres_url"] == {"env": "ALIGN_TRACK_POSTGRES_URL"}
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert instance["run_monitoring"]["enabled"] is True
    (location,) = parsed["workspace.yaml"]["load_from"]
    assert location["grpc_server"]["port"] == int(_command("code-server")[
        _command("code-server").index("-p") + 1])
    helm = parsed["values.yaml"]
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    mounts = {m["mountPath"]: m for m in deployment["volumeMounts"]}
    assert mounts["/experiments"]["readOnly"] is True
    assert helm["runLauncher"]["config"]["k8sRunLauncher"]["volumeMounts"] == (
        deployment["volumeMounts"])


def test_the_image_commands_exist_and_hold_no_secret():
    """Every service of the image runs an entry point this environment installs (the image
    installs the same lock), the Dockerfile copies files that exist, and no deploy file holds
    a password: only references to the environment."""
    commands = [_command(s) for s in IMAGE_SERVICES]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd_line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    commands.append(json.loads(cmd_line[4:]))
    assert json.loads(cmd_line[4:]) == _command("code-server")
    for argv in commands:
        assert (BIN / argv[0]).exists(), argv[0]
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source
    secrets = re.compile(r"://[^/\s:@]+:(?!\$\{|PASSWORD@)[^@\s]+@"  # user:secret@ in a URL
                         r"|(?i:password)\s*[:=]\s*(?!\$\{)\w")   # password: literal
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not secrets.search(path.read_text()), path
    assert secrets.search("postgresql://u:hunter2@h/db") and secrets.search("PASSWORD=x")


def _ingested_parquet(data: Path, key: str, scenes: int) -> bool:
    path = ParquetStore(data).path("scenes", key)
    return path.exists() and pq.read_metadata(path).num_rows == scenes


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", json.dumps({"query": query}).encode(),
                                     {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["data"]


LOCATIONS = ("{ workspaceOrError { ... on Workspace { locationEntries { name "
             "locationOrLoadError { __typename } } } } }")
RUNS = "{ runsOrError { ... on Runs { results { runId status } } } }"


class _Services:
    """The compose services as local processes, logs in files, all stopped at the end."""

    def __init__(self, logs: Path):
        self.logs, self.procs, self.started = logs, {}, {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        with open(self.logs / f"{name}.log", "wb") as out:
            self.procs[name] = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out,
                                                stderr=subprocess.STDOUT,
                                                start_new_session=True)
        self.started[name] = time.monotonic()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited:\n{self.log(name)[-4000:]}"

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            os.killpg(proc.pid, 15)
        for proc in self.procs.values():
            stop_server(proc)


def _wait(what: str, done, services: _Services) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while not done():
        services.check_alive()
        assert time.monotonic() < deadline, f"{what}: not done in {BOUND_SECONDS} s:\n" + (
            services.log("dagster-daemon")[-3000:] + services.log("code-server")[-3000:])
        time.sleep(1)


@pytest.mark.slow
@pytest.mark.postgres
def test_the_team_services_ingest_a_dropped_folder(tmp_path, postgres):
    """Postgres, `mlflow server` on Postgres, the code server over gRPC, `dagster-daemon` and
    `dagster-webserver` as separate processes on one instance (deploy/dagster.yaml through
    ALIGN_TRACK_POSTGRES_URL); a run directory dropped into the tree reaches every store."""
    import sqlalchemy

    dagster_db = postgres()
    dagster_url = dagster_db.replace("//postgres@", f"//postgres:{PASSWORD}@")
    mlflow_db = postgres()
    tree, data, home, logs = (tmp_path / n for n in ("tree", "data", "home", "logs"))
    for folder in (tree, home, logs):
        folder.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    code_port, web_port, mlflow_port = _free_port(), _free_port(), _free_port()
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"] |= {"host": "127.0.0.1", "port": code_port}
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"

    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ALIGN_TRACK_", "MLFLOW_", "DAGSTER_"))}
    dagster_values = {"ALIGN_TRACK_POSTGRES_URL": dagster_url,
                      "ALIGN_TRACK_COMPUTE_LOGS": str(tmp_path / "compute-logs")}
    services_env = _compose()["services"]
    for service in ("dagster-webserver", "dagster-daemon"):
        assert set(services_env[service]["environment"]) == set(dagster_values), service
    dagster_env = base | dagster_values | {"DAGSTER_HOME": str(home),
                                           "ALIGN_TRACK_SENSOR_INTERVAL_SECONDS": "5"}
    local_values = {"ALIGN_TRACK_EXPERIMENTS_DIR": str(tree), "ALIGN_TRACK_DATA_DIR": str(data),
                    "ALIGN_TRACK_AIM_REPO": str(tmp_path / "aim" / "repo"),
                    "ALIGN_TRACK_CACHE_DIR": str(tmp_path / "cache"),
                    "MLFLOW_TRACKING_URI": mlflow_url,
                    "ALIGN_TRACK_MLFLOW_UI_URL": mlflow_url}
    assert set(services_env["code-server"]["environment"]) == {*dagster_values, *local_values}
    workspace_path = str(home / "workspace.yaml")

    services = _Services(logs)
    try:
        services.start("mlflow", _local(_command("mlflow"), host="127.0.0.1",
                                        port=str(mlflow_port), workers="1"),
                       base | services_env["mlflow"]["environment"] | {
                           "MLFLOW_BACKEND_STORE_URI": mlflow_db,
                           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")},
                       tmp_path)
        services.start("code-server", _local(_command("code-server"), h="127.0.0.1",
                                             p=str(code_port)),
                       dagster_env | local_values, tmp_path)
        services.start("dagster-daemon", _local(_command("dagster-daemon"), w=workspace_path),
                       dagster_env, tmp_path)
        services.start("dagster-webserver", _local(_command("dagster-webserver"), h="127.0.0.1",
                                                   p=str(web_port), w=workspace_path),
                       dagster_env, tmp_path)
        web = f"http://127.0.0.1:{web_port}"
        ready = {}
        wait_http(f"{web}/server_info", services.procs["dagster-webserver"])
        ready["dagster-webserver"] = time.monotonic()
        _wait("code location loaded", lambda: [
            e["locationOrLoadError"]["__typename"] for e in
            _graphql(web, LOCATIONS)["workspaceOrError"]["locationEntries"]] == [
            "RepositoryLocation"], services)
        ready["code-server"] = time.monotonic()
        wait_http(f"{mlflow_url}/health", services.procs["mlflow"])
        ready["mlflow"] = time.monotonic()
        for name, at in ready.items():
            print(f"{name} ready {at - services.started[name]:.1f} s after start")

        run_dir = tree / "team" / "run"
        shutil.copytree(SAMPLE_TREE / "wrapper_2026_04" / "random", run_dir)
        key, scenes, dropped = "team/run", item_count(run_dir), time.monotonic()
        for store, done in (
                ("Parquet", lambda: _ingested_parquet(data, key, scenes)),
                ("MLflow", lambda: mlflow_scenes_finished(mlflow_url, key, scenes)),
                ("Aim", lambda: len(aim_runs_seen_by_a_fresh_process(
                    tmp_path / "aim" / "repo", f'run.partition_key == "{key}"')) == scenes)):
            _wait(f"{key} in {store}", done, services)
            print(f"dropped folder in {store} after {time.monotonic() - dropped:.1f} s")

        # One instance: the runs the daemon launched are in Postgres, and the webserver
        # (another process) lists them; no SQLite run storage beside the config.
        engine = sqlalchemy.create_engine(dagster_db)

        def stored() -> set[str]:
            with engine.connect() as conn:
                return {r[0] for r in conn.execute(sqlalchemy.text("SELECT run_id FROM runs"))}

        # The daemon may launch a run meanwhile (the analysis after the tables): listed between
        # two reads of the table, the runs listed are the ones stored by then.
        before = stored()
        listed = {r["runId"] for r in _graphql(web, RUNS)["runsOrError"]["results"]}
        after = stored()
        engine.dispose()
        assert before and before <= listed <= after
        assert not list(home.rglob("*.db"))
        assert list((tmp_path / "compute-logs").rglob("*.err"))  # step logs, where both look
        # The fingerprint cache in the host cache dir, none beside the shared data.
        assert list((tmp_path / "cache").glob("fingerprints-*.sqlite"))
        assert not (data / "state" / "fingerprints.sqlite").exists()
    finally:
        services.stop()
    # The password was in the environment only: no file, log or record shows it.
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path
