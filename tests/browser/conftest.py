"""The three UIs as a user starts them, over the bundled tree ingested once, driven by Debian's
Chromium through Playwright. Every request that is not to 127.0.0.1 is blocked."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_TREE, _free_port, require

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 60_000  # per action and per assertion
STACK_TIMEOUT_SECONDS = 1500  # pytest-timeout: the stack's bounds (ingest 600 s, 4 x 180 s)
SCREENSHOTS = Path(__file__).parent / "screenshots"
HERE = Path(__file__).parent
# Flags that keep Chromium from calling home; no --user-data-dir (Playwright refuses it).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]
# Dismissed once per context: MLflow's workflow chooser and Aim's community pop-up.
LOCAL_STORAGE = """
localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
localStorage.setItem('communityPopupSeen', 'true');
"""


def pytest_configure(config):
    """Assertions wait as long as actions: on 2 busy cores a first page load takes seconds."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)


def pytest_collection_modifyitems(items):
    """Everything here drives a browser against UI servers: `browser` and `slow`, all on one
    worker in a parallel run, and runs last. Playwright's sync API keeps an event loop running
    in the main thread while the browser is open, and a test after it that calls `asyncio.run`
    (Dagster's automation evaluation does) fails with "cannot be called from a running event
    loop"."""
    def here(item: pytest.Item) -> bool:
        return HERE in Path(str(item.fspath)).parents

    for item in filter(here, items):
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.slow)
        item.add_marker(pytest.mark.xdist_group("browser"))  # one worker: one stack, one browser
        # The first test also pays for the module's stack: an ingest and three UI servers.
        item.add_marker(pytest.mark.timeout(STACK_TIMEOUT_SECONDS))
    items.sort(key=here)  # stable: the others keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's page, saved as tests/browser/screenshots/<test>.png (git-ignored)."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and page is not None:
        SCREENSHOTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{item.name}.png"), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            report.sections.append(("screenshot", f"not saved: {exc}"))


def _chromium() -> Path:
    """Debian's chromium (`.ci/provision` installs it); never a downloaded browser build."""
    require(CHROMIUM.exists(), f"Debian's chromium ({CHROMIUM})")
    return CHROMIUM


@dataclass(frozen=True)
class Stack:
    data: Path
    dagster: str
    mlflow: str
    aim: str
    logs: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.dagster}/graphql", body,
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        assert "errors" not in answer, answer
        return answer["data"]


def _start(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A server in its own process group, with default SIGINT/SIGTERM handling (a backgrounded
    `dagster dev` otherwise ignores both and leaks its children)."""
    def defaults() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=defaults)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT to the group, then SIGKILL to whatever of it is left."""
    with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):  # children left behind by the group
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            assert proc.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no answer from {url}:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)


def _wait_location_loaded(stack: Stack, seconds: float = 180) -> None:
    query = "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"
    deadline = time.monotonic() + seconds
    while True:
        entries = stack.graphql(query)["workspaceOrError"]["locationEntries"]
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return
        assert time.monotonic() < deadline, f"code location not loaded: {entries}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    """`align-track ingest` of the bundled tree into a fresh data dir, then `align-track
    dagster-ui`, `mlflow-ui` and `aim-ui` on free loopback ports, as the README starts them;
    the UI addresses are set for the ingest, so its Dagster metadata links to these servers."""
    _chromium()
    root = tmp_path_factory.mktemp("uis")
    data = root / "data"
    ports = {name: _free_port() for name in ("dagster", "mlflow", "aim")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ALIGN_TRACK_", "MLFLOW_", "DAGSTER_", "AIM_"))}
    env |= {"ALIGN_TRACK_EXPERIMENTS_DIR": str(SAMPLE_TREE), "ALIGN_TRACK_DATA_DIR": str(data),
            "ALIGN_TRACK_MLFLOW_UI_URL": urls["mlflow"], "ALIGN_TRACK_AIM_UI_URL": urls["aim"]}
    align_track = str(Path(sys.executable).parent / "align-track")
    subprocess.run([align_track, "ingest"], env=env, check=True, capture_output=True,
                   timeout=600)
    stack = Stack(data, urls["dagster"], urls["mlflow"], urls["aim"], root)
    procs = {name: _start([align_track, f"{name}-ui", "--port", str(ports[name])], env,
                          root / f"{name}.log") for name in ports}
    try:
        for name, path in (("mlflow", "/health"), ("aim", "/api/projects/"),
                           ("dagster", "/server_info")):
            _wait_ready(urls[name] + path, procs[name], root / f"{name}.log")
        _wait_location_loaded(stack)
        yield stack
    finally:
        for proc in procs.values():
            _stop(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(_chromium()), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _local_only(route) -> None:
    url = route.request.url
    if url.startswith(("http://127.0.0.1:", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()


@pytest.fixture
def page(browser, stack):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.route("**/*", _local_only)
    context.add_init_script(LOCAL_STORAGE)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()
