"""deploy/'s files checked against their engines' own JSON schemas (vendored in tests/schemas/):
a key Compose does not know, or a value of the wrong type, fails here rather than at
`docker compose up` on the team's host."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

SCHEMAS = REPO / "tests" / "schemas"
DEPLOY = REPO / "deploy"


def _compose_errors(compose: dict) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(compose)]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def test_docker_compose_follows_the_compose_specification(compose):
    assert _compose_errors(compose) == []


def test_the_compose_check_catches_a_misspelled_key_and_a_wrong_type(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["comand"] = broken["services"]["mlflow"].pop("command")
    broken["services"]["postgres"]["restart"] = 3
    assert sorted(_compose_errors(broken)) == [
        "services/mlflow: 'comand' does not match any of the regexes: '^x-'",
        "services/postgres/restart: 3 is not of type 'string'"]
