"""Redaction keeps every research setting of the bundled configs and masks every credential."""

import json
from pathlib import Path

import pytest
import yaml

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.source.redaction import REDACTED, SETTING_KEYS, redact, redact_file
from tests.conftest import SAMPLE_TREE

CONFIGS = sorted(SAMPLE_TREE.rglob(".hydra/config.yaml"))
# Everything the bundled configs hold that identifies an account of the evaluation service.
BUNDLED_SECRETS = {"interface.username", "interface.password", "interface.token",
                   "interface.api_endpoint"}


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, str(key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, str(i)))
    else:
        yield ".".join(path), value


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.parent.parent.relative_to(
    SAMPLE_TREE)))
def test_bundled_configs_keep_every_setting(config: Path):
    original = dict(_leaves(yaml.safe_load(config.read_text())))
    redacted = dict(_leaves(redact(yaml.safe_load(config.read_text()))))
    assert redacted.keys() == original.keys()
    for path, value in original.items():
        if path in BUNDLED_SECRETS and value is not None:
            assert redacted[path] == REDACTED, path
        else:
            assert redacted[path] == value, path


def test_the_configs_cover_the_cases():
    """The bundled configs hold both: the settings that used to be lost and real secrets."""
    texts = [c.read_text() for c in CONFIGS]
    assert sum("max_generator_tokens: 8192" in t for t in texts) >= 10
    assert any("password: FAKE-SECRET-DO-NOT-LOG" in t for t in texts)


def test_max_generator_tokens_reaches_the_table():
    rel = "pipeline_comparative_regression/moral_judgement-0.2"
    config = (SAMPLE_TREE / rel / ".hydra/config.yaml").read_text()
    assert "max_generator_tokens: 8192" in config
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)
    stored = parsed.experiments.to_pylist()[0]["hydra_config"]
    assert "max_generator_tokens: 8192" in stored and REDACTED not in stored


SECRET_KEYS = ["password", "db_passwd", "api_key", "apiKey", "OPENAI_API_KEY", "token",
               "hf_token", "access_token", "accessToken", "auth_token", "refresh_token",
               "client_secret", "secret", "aws_secret_access_key", "private_key",
               "credentials", "Authorization", "cookie", "username", "user", "api_endpoint",
               "db_pass", "smtp_pass", "pass", "pw", "db_pw", "passcode",
               # run together, plural, numbered, or a header or a personal access token
               "secretkey", "clientsecret", "privatekey", "accesskey", "secretaccesskey",
               "passwords", "password1", "auth_header", "bearer", "github_pat", "pat"]
SETTINGS = {"max_generator_tokens": 8192, "max_new_tokens": 512, "tokenizer": "gpt2",
            "tokenizer_kwargs": {"padding_side": "left"}, "num_tokens": 3, "max_tokens": 100,
            "session_type": "eval", "user_prompt_template": "Q: {q}", "author": "someone",
            "model_name": "mistralai/Mistral-7B-Instruct-v0.3",
            "input_output_filepath": "/data/shared/samba/phase2_icl/June2025-AF-train_20250523",
            "adm_name": "pipeline_fewshot_comparative_regression_loo_20icl_rerun",
            "target": "ComparativeKDMAScorePredictionPromptNoOutcomes",
            "alignment_target": "ADEPT-DryRun-Moral judgement-0.2", "seed": 1234567890123,
            "kdes": "jAZuZXdPYmqUk5RoFIwGS0RUcmVllJOUhZRSlCiMFm51bXB5Ll9jb3JlLm11bHRpYXJyYXmUjAxf\n"
                    "fZQojAlhbGdvcml0aG2UjARhdXRvlIwJYmFuZHdpZHRolEc/szMzMzMzNIwGa2VybmVslIwIZ2F1\n",
            "url": "https://example.org/v1/models", "justification": "Because sk-style is fine",
            "pass_rate": 0.5, "bypass_cache": True, "first_pass": False, "use_auth": True,
            "second_pass": "beam", "num_pass": 3, "auth_type": "basic", "patience": 3,
            "path": "/data/runs", "pattern": "*.json", "bypass": "cache",
            "database": {"key": "id_col"},
            "sort": {"key": "timing"}, "kdma": {"key": "Moral judgement"},
            "argv": ["run_align_system", "--max-new-tokens", "512", "--pass-rate", "0.5"]}
SECRET_VALUES = ["sk-proj-4f9a8b7c6d5e4f3a2b1c0d9e", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345",
                 "ghp_0123456789abcdefABCDEF0123456789ab", "AKIAIOSFODNN7EXAMPLE",
                 "Bearer abcdef0123456789", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
                 "0123456789abcdef0123456789abcdef", "wJalrXUtnFEMI7K7MDENGbPxRfiCY9EXAMPLEKEY"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credential_keys_are_masked(key: str):
    config = {"interface": {key: "plain-value", "nested": [{key: 12345}]}}
    assert redact(config) == {"interface": {key: REDACTED, "nested": [{key: REDACTED}]}}


@pytest.mark.parametrize("value", SECRET_VALUES)
def test_credential_values_are_masked_whatever_the_key(value: str):
    assert redact({"setting": value, "list": [value]}) == {"setting": REDACTED,
                                                            "list": [REDACTED]}


def test_settings_survive():
    assert redact(SETTINGS) == SETTINGS


def test_a_url_keeps_its_host_and_loses_its_password():
    config = {"db": "postgresql://alice:s3cret@db.example.org:5432/runs",
              "plain": "https://example.org/a@b"}
    out = redact(config)
    assert out["db"] == f"postgresql://{REDACTED}@db.example.org:5432/runs"
    assert "s3cret" not in json.dumps(out) and out["plain"] == config["plain"]


def test_keys_ending_in_key_are_credentials_unless_known_settings():
    masked = redact({"wandb_key": "abc", "openai_key": "def", "hf-key": "ghi",
                     **{name: "kept" for name in SETTING_KEYS}, "exclude_keys": []})
    assert masked == {"wandb_key": REDACTED, "openai_key": REDACTED, "hf-key": REDACTED,
                      **{name: "kept" for name in SETTING_KEYS}, "exclude_keys": []}


def test_credentials_under_a_service_in_an_argument_list_or_an_address_are_masked():
    """Spellings a config or a `meta.json` holds that key names alone do not tell."""
    config = {"openai": {"key": "Zq9LEAKa2"}, "wandb": {"api": "w"}, "api": {"key": "k"},
              "anthropic": [{"key": "x"}], "over": ["--interface.password", "p", "--seed", "1"],
              "database": {"host": "db.lab.example", "db_pass": "Zq9LEAKa1"},
              "argv": ["run_align_system", "--openai-key", "Zq9LEAKa4", "--db-pass", "Zq9LEAKa5",
                       "--max-new-tokens", "512"],
              "hook": "https://hooks.slack.com/services/T0001/B0001/XXXXyyyyZZZZ",
              "signed": "https://b.s3.amazonaws.com/o?X-Amz-Date=1&X-Amz-Signature=abcd01",
              "log": "connecting with DB_PASS=hunter2 now"}
    assert redact(config) == {
        "openai": {"key": REDACTED}, "wandb": {"api": REDACTED}, "api": {"key": REDACTED},
        "anthropic": [{"key": REDACTED}], "over": ["--interface.password", REDACTED, "--seed", "1"],
        "database": {"host": "db.lab.example", "db_pass": REDACTED},
        "argv": ["run_align_system", "--openai-key", REDACTED, "--db-pass", REDACTED,
                 "--max-new-tokens", "512"],
        "hook": f"https://hooks.slack.com/services/{REDACTED}",
        "signed": f"https://b.s3.amazonaws.com/o?X-Amz-Date=1&X-Amz-Signature={REDACTED}",
        "log": f"connecting with DB_PASS={REDACTED} now"}
    meta = json.dumps({"version": "0.5.3", "argv": ["run", "--openai-key", "Zq9LEAKa4"]})
    assert "Zq9LEAKa4" not in redact_file("meta.json", meta.encode()).decode()


def test_copied_files_are_masked_parsed_or_line_by_line():
    meta = b'{\n  "version": "v1",\n  "api_key": "s3cr3t"\n}\n'
    assert json.loads(redact_file("meta.json", meta)) == {"version": "v1", "api_key": REDACTED}
    plain = b'{\n  "version": "v1"\n}\n'
    assert redact_file("meta.json", plain) is plain  # nothing to mask: the bytes as they were
    assert yaml.safe_load(redact_file("c.yaml", b"wandb_key: s3cr3t\nsort_key: name\n")) == {
        "wandb_key": REDACTED, "sort_key": "name"}
    broken = (b'{"api_key": "s3cr3t", "sort_key": "name",\n'
              b"wandb_key: s3cr3t # cut short\ntoken=s3cr3t\nurl: https://me:pw@host/x\n")
    assert redact_file("meta.json", broken).decode() == (
        f'{{"api_key": "{REDACTED}", "sort_key": "name",\n'
        f"wandb_key: {REDACTED} # cut short\ntoken={REDACTED}\nurl: https://{REDACTED}@host/x\n")


# Credentials written inside string values (a user's run folder): each masked, its key kept.
WRITTEN = {
    "Authorization: Bearer SECRETBEARER08": f"Authorization: Bearer {REDACTED}",
    "Authorization: Basic YWxpY2U6c2VjcmV0cGFzc3dvcmQ=": f"Authorization: Basic {REDACTED}",
    "X-Api-Key: SECRETQ03": f"X-Api-Key: {REDACTED}",
    "OPENAI_API_KEY=SECRETQ04": f"OPENAI_API_KEY={REDACTED}",
    "HF_TOKEN=SECRETQ05": f"HF_TOKEN={REDACTED}",
    "--api-key SECRETN10 --max-new-tokens 512": f"--api-key {REDACTED} --max-new-tokens 512",
}
WRITTEN_CONFIG = b"""\
client:
  headers: ["Authorization: Bearer SECRETBEARER08"]
  extra_headers:
    - "Authorization: Basic YWxpY2U6c2VjcmV0cGFzc3dvcmQ="
    - "X-Api-Key: SECRETQ03"
  env_list: ["OPENAI_API_KEY=SECRETQ04", "HF_TOKEN=SECRETQ05"]
  cli_args: "--api-key SECRETN10 --max-new-tokens 512"
  tokenizer: gpt2
  session_type: live
  note: Token economy of the ward
"""


@pytest.mark.parametrize("text", WRITTEN)
def test_credentials_written_in_a_string_are_masked_their_keys_kept(text: str):
    assert redact({"value": text, "list": [text]}) == {"value": WRITTEN[text],
                                                       "list": [WRITTEN[text]]}


def test_credentials_written_in_a_yaml_config_are_masked():
    out = redact_file("config.yaml", WRITTEN_CONFIG)
    assert not any(s in out for s in (b"SECRETBEARER08", b"YWxpY2U6", b"SECRETQ03",
                                      b"SECRETQ04", b"SECRETQ05", b"SECRETN10"))
    assert yaml.safe_load(out) == {"client": {
        "headers": [WRITTEN["Authorization: Bearer SECRETBEARER08"]],
        "extra_headers": [WRITTEN["Authorization: Basic YWxpY2U6c2VjcmV0cGFzc3dvcmQ="],
                          WRITTEN["X-Api-Key: SECRETQ03"]],
        "env_list": [f"OPENAI_API_KEY={REDACTED}", f"HF_TOKEN={REDACTED}"],
        "cli_args": f"--api-key {REDACTED} --max-new-tokens 512",
        "tokenizer": "gpt2", "session_type": "live", "note": "Token economy of the ward"}}


def test_settings_and_prose_beside_a_written_credential_are_kept():
    config = {
        "cli": "--tokenizer gpt2 --max-new-tokens 512 --hf-token=hf_x1 -password pw2",
        "lines": "tokenizer: gpt2\nsession_type: live\npassword: hunter2\nmax_tokens=100",
        "prose": "Token economy of the ward. Basic principles. The nurse's password: hunter2 "
                 "was on a note; call it with Bearer abcDEF123456 now.",
        "chat": "User: What should I do?\nAssistant: Wait.\nuser: alice",
        "overrides": ["interface.username=alice", "adm.max_new_tokens=5",
                      "interface.api_endpoint=https://darpaitm.example.org"],
        "quoted": "curl -H 'Authorization: Bearer abc.def' -u me"}
    assert redact(config) == {
        "cli": f"--tokenizer gpt2 --max-new-tokens 512 --hf-token={REDACTED} -password {REDACTED}",
        "lines": f"tokenizer: gpt2\nsession_type: live\npassword: {REDACTED}\nmax_tokens=100",
        "prose": f"Token economy of the ward. Basic principles. The nurse's password: {REDACTED} "
                 f"was on a note; call it with Bearer {REDACTED} now.",
        "chat": f"User: What should I do?\nAssistant: Wait.\nuser: {REDACTED}",
        "overrides": [f"interface.username={REDACTED}", "adm.max_new_tokens=5",
                      f"interface.api_endpoint={REDACTED}"],
        "quoted": f"curl -H 'Authorization: Bearer {REDACTED}' -u me"}


def test_credentials_written_in_texts_of_json_and_unparsed_files_are_masked():
    items = [{"prompt": "Send X-Api-Key: SECRETQ03 with --max-new-tokens 512"}]
    out = json.loads(redact_file("meta.json", json.dumps(items).encode()))
    assert out == [{"prompt": f"Send X-Api-Key: {REDACTED} with --max-new-tokens 512"}]
    # an LLM's prompts and answers are prose: only whole credentials and URI userinfo go
    prose = [{"input": {"probe": "Primary endpoint: mortality. User: B. Follow Basic "
                                 "START-2020 triage", "url": "http://u:pw@host/x"}}]
    out = json.loads(redact_file("input_output.json", json.dumps(prose).encode()))
    assert out == [{"input": {"probe": prose[0]["input"]["probe"],
                              "url": f"http://{REDACTED}@host/x"}}]
    lines = (b"Authorization: Bearer SECRETBEARER08\n"
             b"run --api-key SECRETN10 --max-new-tokens 512 --tokenizer gpt2\n"
             b"Token economy of the ward\n")
    assert redact_file("notes.txt", lines).decode() == (
        f"Authorization: Bearer {REDACTED}\n"
        f"run --api-key {REDACTED} --max-new-tokens 512 --tokenizer gpt2\n"
        "Token economy of the ward\n")


@pytest.mark.parametrize(("override", "kept"), [
    ("+env.GITHUB_PAT=abc123", "+env.GITHUB_PAT="),
    ("interface.bearer=abc", "interface.bearer="),
    ("interface.credentials=[abc,def]", "interface.credentials="),
    ("interface.password=a\\ b", "interface.password="),
    ("interface.api_keys=[k1,k2]", "interface.api_keys="),
    ("interface.username=ALIGN-ADM-Baseline", "interface.username="),
    ("interface={username:bob,password:x}", "interface={username:"),
    ("--github-pat=x1y2z3", "--github-pat="),
])
def test_credentials_in_a_hydra_override_are_masked_whole(override, kept):
    """A run's overrides reach the tables and both trackers: a value may hold `,`, `]` or a
    space that ended a pair written in text (`[abc,def]` kept `def]`)."""
    from align_track_pipeline.core.source.redaction import redact_override

    masked = redact_override(override)
    assert masked.startswith(kept) and REDACTED in masked, masked
    secret = override.partition("=")[2]
    assert not any(part in masked for part in ("abc", "def", "bob", " b", "k1", "x1y2", "ALIGN"))
    assert secret not in masked


def test_settings_in_a_hydra_override_are_kept():
    from align_track_pipeline.core.source.redaction import redact_override

    for override in ("adm=phase2_pipeline_fewshot_comparative_regression", "align_to_target=true",
                     "+experiment=integration_tests/random", "interface.training_session=null",
                     "driver.apply_action_filtering=false", "x={a:1,b:[1,2]}"):
        assert redact_override(override) == override
