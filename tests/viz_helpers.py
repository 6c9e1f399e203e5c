"""Helpers to serve `kedro viz` from a scratch project and look at it through headless Chromium (selenium)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
# Debian's chromium as root in a closed network: these flags keep it from trying the network or a sandbox.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage")

SERVING_AT = re.compile(r"running at\s+(http://127\.0\.0\.1:\d+)")  # kedro viz's start-up line

# Runs inside the scratch project: what each registered pipeline puts on kedro-viz's collapsed flowchart.
# A namespaced node shows up as its top-level namespace (kedro-viz collapses modular pipelines by default).
_EXPECTED_GRAPH_SCRIPT = """
import json
from pathlib import Path
from kedro.framework.startup import bootstrap_project
bootstrap_project(Path.cwd())
from kedro.framework.project import pipelines
labels = {name: sorted({n.namespace.split(".")[0] if n.namespace else n.name for n in pipe.nodes})
          for name, pipe in pipelines.items() if name != "__default__"}
namespaces = sorted({n.namespace.split(".")[0] for n in pipelines["__default__"].nodes if n.namespace})
grids = {name: sorted(o for o in pipe.all_outputs() if o.endswith(".distilled_grid"))
         for name, pipe in pipelines.items() if name != "__default__"}
print("EXPECTED_GRAPH=" + json.dumps({"labels": labels, "namespaces": namespaces, "grids": grids}))
"""


def project_env() -> dict[str, str]:
    """The offline, telemetry-free environment `tests.kedro_project.kedro` uses."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "true", "KEDRO_DISABLE_TELEMETRY": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def browser_tools() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason they cannot be used."""
    chromium = next((p for p in map(shutil.which, CHROMIUM_CANDIDATES) if p), None)
    chromedriver = shutil.which("chromedriver")
    if chromium is None:
        return "no chromium on PATH (apt-get install chromium chromium-driver)"
    if chromedriver is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -r requirements.txt)"
    return chromium, chromedriver


def free_port() -> int:
    """A free loopback port in 20000-31999: kedro viz refuses ports above 49151, and below Linux's ephemeral
    range (32768+) no outgoing connection can grab it between this check and the server's bind."""
    start = 20000 + (os.getpid() * 97) % 12000  # differs between concurrent test processes
    for offset in range(0, 12000, 7):  # kedro viz itself moves on to the next 4 ports when one is busy
        port = 20000 + (start - 20000 + offset) % 12000
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-31999")


def start_expected_graph(root: Path, env: str = "test") -> subprocess.Popen:
    """Start reading the registered pipelines of environment `env` in `root` (a separate process: kedro's project
    globals stay clean). The graph-building keys are read per environment, so this must match `kedro viz --env`."""
    return subprocess.Popen([sys.executable, "-c", _EXPECTED_GRAPH_SCRIPT], cwd=root,
                            env={**project_env(), "KEDRO_ENV": env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_expected_graph(process: subprocess.Popen, timeout: float = 120) -> dict[str, Any]:
    """{"labels": {pipeline: [flowchart labels]}, "namespaces": [top-level namespaces],
    "grids": {pipeline: [*.distilled_grid outputs]}}."""
    out, err = process.communicate(timeout=timeout)
    line = next((x for x in out.splitlines() if x.startswith("EXPECTED_GRAPH=")), None)
    if process.returncode != 0 or line is None:
        raise AssertionError(f"reading the registered pipelines failed ({process.returncode}):\n{err[-6000:]}")
    return json.loads(line.removeprefix("EXPECTED_GRAPH="))


def stop_process_group(process: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the whole group (kedro viz's uvicorn child outlives its parent otherwise), then SIGKILL."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:  # the group may still hold the orphaned server child even after the parent exited
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=grace)


@contextmanager
def serve_viz(root: Path, *args: str, log_path: Path, timeout: float = 90) -> Iterator[str]:
    """`kedro viz run --no-browser` on a free loopback port in its own process group; yields the base URL."""
    port = free_port()
    kedro_bin = Path(sys.executable).with_name("kedro")
    command = [str(kedro_bin), "viz", "run", "--no-browser", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=root, env=project_env(), stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"kedro viz exited with {process.returncode}:\n{log_path.read_text()[-6000:]}")
            announced = SERVING_AT.search(log_path.read_text(errors="replace"))
            if announced:  # kedro viz moves to the next port on its own when ours was taken meanwhile
                url = announced.group(1)
            try:
                with urllib.request.urlopen(f"{url}/api/main", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"kedro viz did not answer in {timeout} s:\n{log_path.read_text()[-6000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(process)


@contextmanager
def headless_chromium(chromium: str, chromedriver: str, width: int = 2560, height: int = 1440) -> Iterator[Any]:
    """A selenium WebDriver on Debian's chromium with the system chromedriver (no driver download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="viz-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            driver.set_window_size(width, height)
            yield driver
        finally:
            driver.quit()


def open_as_returning_user(driver: Any, url: str) -> None:
    """Open kedro viz with its feature tour already switched off (a setting kept in the browser's localStorage),
    so screenshots show the graph rather than the tour and its 4-second "revisit these hints" toast."""
    driver.get(f"{url}/favicon.ico")  # same origin, so the setting lands in kedro viz's storage
    driver.execute_script("window.localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}));")
    driver.get(url)


def select_pipeline(driver: Any, name: str) -> None:
    """Pick a registered pipeline in kedro viz's pipeline drop-down, as a user would."""
    from selenium.webdriver.common.by import By

    selector = driver.find_element(By.CSS_SELECTOR, '[data-test="kedro-pipeline-selector"]')
    selector.click()
    options = wait_for(lambda: [o for o in selector.find_elements(By.CSS_SELECTOR, ".menu-option")
                                if o.text.strip() == name], timeout=10)
    if not options:
        raise AssertionError(f"pipeline {name!r} is not in kedro viz's drop-down")
    options[0].click()


def rendered_nodes(driver: Any) -> list[dict[str, str]]:
    """Every node drawn on the flowchart: its type, kedro-viz id/full name and the label text the user sees."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('g.pipeline-node')).map(g => ({
            type: g.getAttribute('data-node-type') || '',
            fullname: g.getAttribute('data-node-fullname') || '',
            label: (g.querySelector('.pipeline-node__text') || {}).textContent || ''}));
    """)


def label_key(label: str) -> str:
    """Compare labels the same way whether kedro-viz shows raw names or its "pretty names" (Title Case)."""
    return label.strip().lower().replace(" ", "_")


def wait_for(condition, timeout: float, interval: float = 0.3) -> Any:
    """Poll `condition()` until it returns something truthy; return its last value either way."""
    deadline = time.monotonic() + timeout
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = condition()
    return value


def dismiss_overlays(driver: Any) -> None:
    """Close the "new version" reminder, the feature tour and the large-graph warning so the graph is visible."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    buttons = driver.find_elements(By.CSS_SELECTOR, ".update-reminder-unexpanded button, "
                                                    ".pipeline-warning__button-wrapper button, .feature-hints__close")
    for button in buttons:
        try:
            wanted = "feature-hints__close" in button.get_attribute("class") or \
                button.text.strip() in {"Dismiss", "Render it anyway"}
            if wanted and button.is_displayed():
                button.click()
        except WebDriverException:  # it went away while we looked (the page re-renders), nothing to close
            continue
