"""kedro-viz as users see it: serve the real project, open it in headless Chromium, read the drawn flowchart.

Expected nodes come from the registered pipelines at test time (phases are added over time), the assertions
from what the browser rendered. Screenshots land in the scratch project's data/08_reporting/; with
DIFFDISTILL_SAVE_SCREENSHOT=1 they also refresh docs/images/kedro-viz.png (the `baselines` phase) and
docs/images/kedro-viz-preview.png (a distilled grid's preview).
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project
from tests.viz_helpers import (
    browser_tools,
    dismiss_overlays,
    finish_expected_graph,
    headless_chromium,
    label_key,
    open_as_returning_user,
    rendered_nodes,
    select_pipeline,
    serve_viz,
    start_expected_graph,
    wait_for,
)

TOOLS = browser_tools()
if isinstance(TOOLS, str):
    pytest.skip(TOOLS, allow_module_level=True)

pytestmark = pytest.mark.slow

PREFERRED_GRID = "random_ipc1.distilled_grid"  # the cheapest baseline; any `*.distilled_grid` of `baselines` works
DOCS_IMAGES = PROJECT_ROOT / "docs" / "images"  # written only with DIFFDISTILL_SAVE_SCREENSHOT=1


@pytest.fixture(scope="module")
def viz(tmp_path_factory):
    root = scratch_project(tmp_path_factory.mktemp("viz"))
    # Artifacts first, so dataset previews have files to show.
    kedro(root, "run", "--pipelines", "preprocess,teacher,baselines", "--env", "test")
    expected_process = start_expected_graph(root)  # overlaps with kedro viz's start-up
    try:
        with serve_viz(root, "--env", "test", log_path=root / "kedro-viz.log") as url:
            expected = finish_expected_graph(expected_process)
            with headless_chromium(*TOOLS) as driver:
                open_as_returning_user(driver, url)
                yield SimpleNamespace(root=root, url=url, driver=driver, expected=expected)
    finally:
        if expected_process.poll() is None:
            expected_process.kill()
            expected_process.wait()


def _screenshot(viz, name: str, publish: bool = True) -> Path:
    """Save what the browser shows under the scratch project's data/08_reporting (and docs/images on request)."""
    time.sleep(1.0)  # let kedro viz's fade-in and zoom transitions finish before the picture
    dismiss_overlays(viz.driver)
    path = viz.root / "data" / "08_reporting" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    assert viz.driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
    if publish and os.environ.get("DIFFDISTILL_SAVE_SCREENSHOT") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / name)
    return path


def _click(driver, element) -> None:
    """A real click; kedro-viz's minimap or tooltips can sit over a node, then dispatch the click on it."""
    from selenium.common.exceptions import ElementClickInterceptedException, ElementNotInteractableException

    try:
        element.click()
    except (ElementClickInterceptedException, ElementNotInteractableException):
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", element)


def test_every_phase_is_drawn_on_the_flowchart(viz) -> None:
    expected = {phase: {label_key(x) for x in labels} for phase, labels in viz.expected["labels"].items()}
    assert expected and all(expected.values()), f"registered pipelines are empty: {viz.expected['labels']}"
    wanted = set().union(*expected.values())

    def drawn():
        dismiss_overlays(viz.driver)  # a large graph waits behind a "Render it anyway" button
        nodes = rendered_nodes(viz.driver)
        return nodes if wanted <= {label_key(n["label"]) for n in nodes} else None

    nodes = wait_for(drawn, timeout=45) or rendered_nodes(viz.driver)
    labels = {label_key(n["label"]): n for n in nodes}
    missing = {phase: sorted(want - labels.keys()) for phase, want in expected.items() if want - labels.keys()}
    assert not missing, f"nodes not drawn, by phase: {missing}\ndrawn: {sorted(labels)}"

    # Namespaces are drawn collapsed, as one modular-pipeline node each; plain nodes as task nodes.
    namespaces = {label_key(x) for x in viz.expected["namespaces"]}
    assert namespaces, "no registered node is namespaced"
    wrong = {label: labels[label]["type"] for label in wanted
             if labels[label]["type"] != ("modularPipeline" if label in namespaces else "task")}
    assert not wrong, f"nodes drawn as the wrong kind: {wrong}"

    _screenshot(viz, "kedro-viz-default.png", publish=False)  # the whole project: too wide to read in docs


def test_distilled_grid_shows_its_image_preview(viz) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    grids = viz.expected["grids"].get("baselines", [])
    assert grids, f"the baselines pipeline outputs no *.distilled_grid: {viz.expected['grids']}"
    grid = PREFERRED_GRID if PREFERRED_GRID in grids else grids[0]
    driver = viz.driver
    assert wait_for(lambda: rendered_nodes(driver), timeout=45), "kedro viz drew no flowchart"
    dismiss_overlays(driver)
    select_pipeline(driver, "baselines")  # one phase: small enough to read, unlike the whole project
    phase = {label_key(x) for x in viz.expected["labels"]["baselines"]}

    def phase_drawn():  # exactly the phase's nodes, so no element of the previous view is left to click
        drawn = {label_key(n["label"]) for n in rendered_nodes(driver) if n["type"] != "data"}
        return drawn == phase

    assert wait_for(phase_drawn, timeout=30), f"the baselines view does not show exactly {sorted(phase)}"

    def grid_node():
        found = driver.find_elements(By.CSS_SELECTOR, f'g.pipeline-node[data-node-fullname="{grid}"]')
        return found[0] if found else None

    node = wait_for(grid_node, timeout=30)
    if node is None:  # drawn inside its collapsed namespace: open the namespace as a user would
        namespace = grid.split(".")[0]
        _click(driver, driver.find_element(
            By.CSS_SELECTOR, f'g.pipeline-node--modularPipeline[data-node-fullname="{namespace}"]'))
        node = wait_for(grid_node, timeout=15)
    assert node is not None, f"{grid} is not on the flowchart"
    _screenshot(viz, "kedro-viz.png")
    _click(driver, node)

    def preview():
        titles = driver.find_elements(By.CSS_SELECTOR, ".pipeline-metadata__title")
        images = driver.find_elements(By.CSS_SELECTOR, ".pipeline-metadata img")
        if not titles or titles[0].text != grid or not images:
            return None
        decoded = driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", images[0])
        return images[0] if decoded else None

    image = wait_for(preview, timeout=30)
    assert image is not None, f"the metadata panel of {grid} shows no decoded preview image"
    source = image.get_attribute("src")
    prefix = "data:image/png;base64,"
    assert source.startswith(prefix), f"preview is not an inline PNG: {source[:60]}"
    shown = base64.b64decode(source.removeprefix(prefix))
    assert shown[:8] == b"\x89PNG\r\n\x1a\n"
    assert image.size["width"] > 50 and image.size["height"] > 50

    # The picture is the newest saved version of the artifact, byte for byte.
    path_title = driver.find_element(By.CSS_SELECTOR, '[data-label="File Path:"] span').get_attribute("title")
    versioned = next(p for p in (Path("/" + path_title.lstrip("/")), viz.root / path_title) if p.exists())
    newest = sorted(v for v in versioned.iterdir() if v.is_dir())[-1] / versioned.name
    assert shown == newest.read_bytes()
    ActionChains(driver).move_to_element(image).perform()  # no node tooltip under the pointer in the picture
    _screenshot(viz, "kedro-viz-preview.png")
