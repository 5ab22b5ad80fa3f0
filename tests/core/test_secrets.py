"""Credentials of URIs are masked in any text, and errors leave `credentials_masked` without
them."""

import pytest

from align_track_pipeline.core.secrets import (
    MaskedError,
    credentials_masked,
    mask_text,
    without_credentials,
)

MLFLOW_ERROR = ("API request to http://alice:SECRETPW@127.0.0.1:5000/api/2.0/mlflow/experiments"
                "/get-by-name failed with exception HTTPConnectionPool(host='127.0.0.1', "
                "port=5000): Max retries exceeded")


@pytest.mark.parametrize(("text", "masked"), [
    (MLFLOW_ERROR, MLFLOW_ERROR.replace("alice:SECRETPW", "***")),
    ("postgresql+psycopg2://u:p%40ss@db:5432/x and https://tok3n@h/p",
     "postgresql+psycopg2://***@db:5432/x and https://***@h/p"),
    ("'http://a:b@h:1'\n\"http://c:d@h:2\"", "'http://***@h:1'\n\"http://***@h:2\""),
    ("http://127.0.0.1:5000/#/experiments/1 user@example.org", None),  # nothing to mask
    ("postgresql+psycopg2://h/db?sslmode=require&Password=p%3Dw&x=1 'http://h/?token=t0k'",
     "postgresql+psycopg2://h/db?sslmode=require&Password=***&x=1 'http://h/?token=***'"),
])
def test_mask_text(text, masked):
    assert mask_text(text) == (masked or text)


def test_without_credentials():
    assert without_credentials("http://alice:pw@host:5000/x") == "http://host:5000/x"
    assert without_credentials("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"
    assert without_credentials("postgresql+psycopg2://u:pw@h/db?password=pw&sslmode=require") \
        == "postgresql+psycopg2://h/db?password=***&sslmode=require"


def test_an_error_holding_credentials_is_replaced_and_logged_masked():
    logged: list[str] = []
    with pytest.raises(MaskedError) as raised, credentials_masked(logged.append):
        try:
            raise OSError("connection refused")
        except OSError:
            raise ValueError(MLFLOW_ERROR)  # noqa: B904 - a chain, as MLflow raises it
    assert str(raised.value) == "builtins.ValueError: " + mask_text(MLFLOW_ERROR)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert len(logged) == 1 and "SECRETPW" not in logged[0]
    assert "OSError: connection refused" in logged[0] and "http://***@127.0.0.1" in logged[0]


def test_an_error_without_credentials_is_raised_as_it_is():
    error = ValueError("no such experiment")
    with pytest.raises(ValueError) as raised, credentials_masked(pytest.fail):
        raise error
    assert raised.value is error


def test_a_password_with_unencoded_at_or_hash_is_masked_whole():
    from align_track_pipeline.core.secrets import mask_text, without_credentials

    assert mask_text("to http://alice:p@ss@host:5000/api") == "to http://***@host:5000/api"
    assert without_credentials("http://alice:p#ss@host:5000/x") == "http://host:5000/x"
    assert "tok123" not in mask_text("https://tok123@host/x")


@pytest.mark.parametrize("uri", [
    "http://bob:s3cr3t-PLANTED/x@127.0.0.1:5077",
    "postgresql+psycopg2://bob:s3cr3t/PLANTED@db:5432/mlflow",
    "http://bob:s3cr3t#PLANTED@127.0.0.1:5077",
])
def test_a_password_with_an_unencoded_slash_is_masked_and_named_as_the_fault(uri):
    """Generated passwords hold `/`; unencoded, it ends the URI's host part for every parser,
    and the password was then shown whole in the error about the port."""
    from align_track_pipeline.core.secrets import unencoded_message

    assert "PLANTED" not in mask_text(f"to {uri} failed")
    assert "PLANTED" not in without_credentials(uri)
    message = unencoded_message("MLflow tracking URI", uri)
    assert message is not None and "PLANTED" not in message
    assert "%2F" in message or "%23" in message


def test_a_slash_after_a_port_is_no_password():
    from align_track_pipeline.core.secrets import unencoded_in_password

    for uri in ("http://127.0.0.1:5000/#/experiments/1", "postgresql+psycopg2://u:pw@db:5432/x",
                "http://a:b@h:1/p?x=1#y", "http://host:5000/proxy/team@corp",
                "postgresql+psycopg2://h:5432/db?sslcert=/x@y"):
        assert unencoded_in_password(uri) is None, uri
