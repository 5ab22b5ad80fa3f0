"""One settings object: every variable is read, typed and validated once, a bad value stops
every command with exit 2 naming it and what it accepts, and `align-track config` shows what
is in effect and where it comes from, secrets masked."""

import ast
import json
import subprocess
import sys

import pytest

from align_track_pipeline.cli.main import main
from align_track_pipeline.core.settings import (
    REGISTRY,
    SettingError,
    current,
    load_settings,
)
from tests.conftest import REPO

# One bad value of each kind, and the message it gets.
BAD = [
    ("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "abc", "expected a whole number of seconds >= 1"),
    ("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "0", "expected a whole number of seconds >= 1"),
    ("ALIGN_TRACK_PARTITIONS_PER_RUN", "2.5", "expected a whole number >= 1"),
    ("ALIGN_TRACK_PARSE_PROCESSES", "-1", "expected a whole number >= 1"),
    ("ALIGN_TRACK_DEAD_WRITER_SECONDS", "0", "expected a number of seconds > 0"),
    ("ALIGN_TRACK_POOL_WAIT_SECONDS", "soon", "expected a number of seconds >= 0"),
    ("ALIGN_TRACK_MLFLOW_FLAT", "maybe", "expected on or off"),
    ("ALIGN_TRACK_MLFLOW_TRACES", "2", "expected on or off"),
    ("ALIGN_TRACK_ON_REMOVED", "keep", "expected `delete` or `archive`"),
    ("ALIGN_TRACK_TIMEZONE", "Mars/Olympus", "expected an IANA timezone name"),
    ("ALIGN_TRACK_AIM_UI_URL", "localhost:43800", "expected an http(s)://HOST[:PORT] address"),
    ("ALIGN_TRACK_TRACKERS", ",", "expected comma-separated tracker names"),
    ("ALIGN_TRACK_FAULT", "point:0", "expected NAME[:N[:kill|sigint|sigterm]] with N >= 1"),
    ("ALIGN_TRACK_POSTGRES_URL", "mysql://h/db", "expected postgresql+psycopg2://USER"),
]


@pytest.mark.parametrize("name, value, message", BAD, ids=[f"{n}={v}" for n, v, _ in BAD])
def test_each_kind_of_bad_value_exits_2_naming_the_variable(name, value, message, monkeypatch,
                                                            capsys, tmp_path):
    monkeypatch.setenv(name, value)
    assert main(["config", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"align-track: {name}={value}: {message}")
    assert captured.err.count("\n") == 1 and ";" not in captured.err  # this variable only


@pytest.mark.parametrize("command", [["status"], ["ingest"], ["search"], ["dagster-home"],
                                     ["list-runs", "."], ["aim-reindex"], ["config"]])
def test_every_command_stops_before_its_work(command, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "abc")
    assert main([*command, "--data-dir", str(tmp_path)] if command[0] != "list-runs"
                else command) == 2
    assert capsys.readouterr().err == ("align-track: ALIGN_TRACK_SENSOR_INTERVAL_SECONDS=abc: "
                                       "expected a whole number of seconds >= 1\n")
    assert not (tmp_path / "dagster").exists()  # nothing was started


def test_every_bad_value_is_named_at_once_and_json_gets_one_object(monkeypatch, capsys,
                                                                  tmp_path):
    monkeypatch.setenv("ALIGN_TRACK_TIMEZONE", "Nowhere")
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", "many")
    assert main(["config", "--json", "--data-dir", str(tmp_path)]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error == ("ALIGN_TRACK_TIMEZONE=Nowhere: expected an IANA timezone name, e.g. "
                     "Europe/Berlin; ALIGN_TRACK_PARTITIONS_PER_RUN=many: expected a whole "
                     "number >= 1")


def test_a_bad_secret_is_named_without_its_password(monkeypatch):
    with pytest.raises(SettingError) as refused:
        load_settings({"ALIGN_TRACK_POSTGRES_URL": "postgresql://u:hunter2@h/db",
                       "MLFLOW_TRACKING_PASSWORD": " "})
    assert str(refused.value) == (
        "ALIGN_TRACK_POSTGRES_URL=postgresql://***@h/db: expected postgresql+psycopg2://USER:"
        "PASSWORD@HOST:PORT/DATABASE (name the driver: postgresql+psycopg2://, as psycopg 3 "
        "does not work with dagster-postgres)")


def test_values_are_typed_and_unset_ones_take_their_default():
    settings = load_settings({"ALIGN_TRACK_SENSOR_INTERVAL_SECONDS": " 5 ",
                              "ALIGN_TRACK_MLFLOW_FLAT": "yes",
                              "ALIGN_TRACK_POOL_WAIT_SECONDS": "0.5",
                              "ALIGN_TRACK_TIMEZONE": ""})
    assert settings.get("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS") == 5
    assert settings.get("ALIGN_TRACK_MLFLOW_FLAT") is True
    assert settings.get("ALIGN_TRACK_MLFLOW_TRACES") is True
    assert settings.get("ALIGN_TRACK_POOL_WAIT_SECONDS") == 0.5
    assert settings.get("ALIGN_TRACK_TIMEZONE") == "UTC"  # empty counts as unset
    assert settings.get("ALIGN_TRACK_AIM_REPO") is None  # derived by its reader
    assert not settings.is_set("ALIGN_TRACK_TIMEZONE")


def test_a_variable_not_in_the_registry_cannot_be_read():
    with pytest.raises(KeyError):
        load_settings({}).get("ALIGN_TRACK_NOT_A_SETTING")


def test_current_follows_the_environment_per_test(monkeypatch):
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", "7")
    assert current().get("ALIGN_TRACK_PARTITIONS_PER_RUN") == 7
    monkeypatch.setenv("ALIGN_TRACK_PARTITIONS_PER_RUN", "9")
    assert current().get("ALIGN_TRACK_PARTITIONS_PER_RUN") == 9


def test_config_shows_each_value_with_its_source_and_masks_secrets(monkeypatch, capsys,
                                                                  tmp_path):
    for name in REGISTRY:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://bob:hunter2@mlflow.example:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter3")
    monkeypatch.setenv("ALIGN_TRACK_POSTGRES_URL", "postgresql+psycopg2://u:hunter4@db/dg")
    monkeypatch.setenv("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS", "10")
    data = tmp_path / "data"
    assert main(["config", "--json", "--data-dir", str(data)]) == 0
    printed = capsys.readouterr().out
    assert "hunter" not in printed
    shown = json.loads(printed)["settings"]
    assert list(shown) == list(REGISTRY)
    assert shown["ALIGN_TRACK_DATA_DIR"] == {"value": str(data), "source": "option"}
    assert shown["ALIGN_TRACK_SENSOR_INTERVAL_SECONDS"] == {"value": "10", "source": "env"}
    assert shown["ALIGN_TRACK_TIMEZONE"] == {"value": "UTC", "source": "default"}
    assert shown["ALIGN_TRACK_MLFLOW_TRACES"] == {"value": "on", "source": "default"}
    assert shown["MLFLOW_TRACKING_URI"] == {"value": "http://***@mlflow.example:5000",
                                            "source": "env"}
    assert shown["MLFLOW_TRACKING_PASSWORD"] == {"value": "***", "source": "env"}
    assert shown["ALIGN_TRACK_POSTGRES_URL"] == {"value": "postgresql+psycopg2://***@db/dg",
                                                 "source": "env"}
    # derived from the data dir and the tracking store, as the trackers compute them
    assert shown["ALIGN_TRACK_AIM_REPO"] == {"value": str(data / "aim"), "source": "derived"}
    assert shown["ALIGN_TRACK_MLFLOW_UI_URL"] == {"value": "http://mlflow.example:5000",
                                                  "source": "derived"}
    assert shown["DAGSTER_HOME"] == {"value": str(data / "dagster"), "source": "derived"}
    assert shown["ALIGN_TRACK_TRACKERS"] == {"value": "mlflow,aim", "source": "derived"}


def test_config_shows_an_unset_secret_as_unset(monkeypatch, capsys, tmp_path):
    """A mask where nothing is set would tell the user a password is configured."""
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert main(["config", "--json", "--data-dir", str(tmp_path)]) == 0
    shown = json.loads(capsys.readouterr().out)["settings"]
    assert shown["MLFLOW_TRACKING_PASSWORD"] == {"value": "unset", "source": "default"}


def test_config_prints_a_table_one_row_per_variable(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ALIGN_TRACK_ON_REMOVED", "archive")
    assert main(["config", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["variable", "value", "source"]
    assert len(lines) == 2 + len(REGISTRY)
    assert lines[2 + list(REGISTRY).index("ALIGN_TRACK_ON_REMOVED")].split() == [
        "ALIGN_TRACK_ON_REMOVED", "archive", "env"]


def test_the_code_location_refuses_to_load_naming_the_variable():
    env = {"PATH": "/usr/bin:/bin", "ALIGN_TRACK_PARTITIONS_PER_RUN": "lots"}
    proc = subprocess.run([sys.executable, "-c", "import align_track_pipeline.definitions"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "align_track_pipeline.core.settings.SettingError: ALIGN_TRACK_PARTITIONS_PER_RUN=lots: "
        "expected a whole number >= 1")


def _direct_reads(tree: ast.AST) -> list[str]:
    """Registered variables read from an environment mapping (`os.environ`, an `env`
    argument) or `os.getenv` without the registry."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute) \
                and _is_constant(node.args[0]) and (node.func.attr == "getenv" or (
                    node.func.attr == "get" and _is_environment(node.func.value))):
            found.append(node.args[0].value)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and _is_constant(node.slice) and _is_environment(node.value):
            found.append(node.slice.value)
    return [name for name in found if name in REGISTRY or name.startswith("ALIGN_TRACK_")]


def _is_environment(node: ast.AST) -> bool:
    return ast.unparse(node).split(".")[-1] in ("environ", "env", "environment")


def _is_constant(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def test_modules_read_registered_variables_only_through_the_settings():
    offenders = {}
    for path in (REPO / "align_track_pipeline").rglob("*.py"):
        reads = _direct_reads(ast.parse(path.read_text()))
        if reads:
            offenders[str(path.relative_to(REPO))] = reads
    assert offenders == {}


def test_the_direct_read_check_sees_a_read():
    code = ('import os\nx = os.environ.get("ALIGN_TRACK_X")\ny = os.environ["DAGSTER_HOME"]\n'
            'z = env.get("MLFLOW_TRACKING_URI")\nw = os.getenv("ALIGN_TRACK_Y")\n'
            'v = current().get("ALIGN_TRACK_Z")\n')
    assert sorted(_direct_reads(ast.parse(code))) == [
        "ALIGN_TRACK_X", "ALIGN_TRACK_Y", "DAGSTER_HOME", "MLFLOW_TRACKING_URI"]
