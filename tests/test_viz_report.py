"""kedro-viz shows the report as users see it: the CSV as a table, the markdown rendered (set names intact), the
bar plot as a picture; served from a real run of the baselines, their evaluation and the report (the other sets are
then "not evaluated yet", so the note that names them is on the page too).

With DIFFDISTILL_SAVE_SCREENSHOT=1 the table preview's screenshots refresh docs/images/kedro-viz-report-table.png
and docs/images/kedro-viz-report-table-expanded.png.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.kedro_project import PROJECT_ROOT, kedro, scratch_project, versions
from tests.viz_helpers import (
    browser_tools,
    dismiss_overlays,
    headless_chromium,
    open_as_returning_user,
    rendered_nodes,
    select_pipeline,
    serve_viz,
    wait_for,
)

TOOLS = browser_tools()
if isinstance(TOOLS, str):
    pytest.skip(TOOLS, allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def viz(tmp_path_factory):
    root = scratch_project(tmp_path_factory.mktemp("viz-report"))
    kedro(root, "run", "--pipelines", "preprocess,teacher,baselines,evaluate,report", "--env", "test", timeout=1800)
    with serve_viz(root, "--env", "test", log_path=root / "kedro-viz.log") as url:
        with headless_chromium(*TOOLS, width=1800, height=1200) as driver:
            open_as_returning_user(driver, url)
            assert wait_for(lambda: rendered_nodes(driver), timeout=45), "kedro viz drew no flowchart"
            dismiss_overlays(driver)
            select_pipeline(driver, "report")
            yield SimpleNamespace(root=root, url=url, driver=driver)


def open_metadata(viz, dataset: str):
    """Click `dataset` on the report flowchart; return the metadata panel once its preview is drawn."""
    from selenium.webdriver.common.by import By

    driver = viz.driver

    def node():
        found = driver.find_elements(By.CSS_SELECTOR, f'g.pipeline-node[data-node-fullname="{dataset}"]')
        return found[0] if found else None

    element = wait_for(node, timeout=30)
    assert element is not None, f"{dataset} is not on the report flowchart"
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", element)

    def panel():
        titles = driver.find_elements(By.CSS_SELECTOR, ".pipeline-metadata__title")
        if not titles or titles[0].text != dataset:
            return None
        previews = driver.find_elements(By.CSS_SELECTOR, ".pipeline-metadata__preview, .pipeline-metadata__preview-html, "
                                                          ".pipeline-metadata__plot")
        return previews[0] if previews else None

    preview = wait_for(panel, timeout=30)
    assert preview is not None, f"the metadata panel of {dataset} shows no preview:\n" + \
        (viz.root / "kedro-viz.log").read_text()[-3000:]
    return preview


def newest(viz, relative: str) -> Path:
    (*_, version) = versions(viz.root, relative)
    return viz.root / relative / version / Path(relative).name


def number(cell: str) -> float | str:
    """A cell as a number when it is one: the browser writes 7.0 as "7"."""
    try:
        return float(cell)
    except ValueError:
        return cell


def test_report_csv_previews_as_the_full_table(viz) -> None:
    from selenium.webdriver.common.by import By

    preview = open_metadata(viz, "report_table_csv")
    headers = [th.text for th in preview.find_elements(By.CSS_SELECTOR, "th")]
    rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td")]
            for tr in preview.find_elements(By.CSS_SELECTOR, "tr.preview-table__row")]
    saved = list(csv.reader(io.StringIO(newest(viz, "data/08_reporting/report/table.csv").read_text())))
    assert headers == saved[0]
    assert [[number(c) for c in r] for r in rows] == [[number(c) for c in r] for r in saved[1:]], \
        "every row, every cell as saved (an empty std shows empty)"
    assert "could not be previewed" not in (viz.root / "kedro-viz.log").read_text()
    time.sleep(1.0)  # kedro-viz's panel transition
    path = viz.root / "data" / "08_reporting" / "kedro-viz-report-table.png"
    assert viz.driver.save_screenshot(str(path))
    if os.environ.get("DIFFDISTILL_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(path, PROJECT_ROOT / "docs" / "images" / "kedro-viz-report-table.png")


def test_report_markdown_previews_rendered_with_set_names_intact(viz) -> None:
    from selenium.webdriver.common.by import By

    preview = open_metadata(viz, "report_table_markdown")
    table = preview.find_elements(By.CSS_SELECTOR, "table")
    assert table, "the markdown table is drawn as a table"
    text = preview.text
    assert "random subset" in text and "herding" in text and "full data (upper bound)" in text
    assert "(n = 1)" in text and "± 0.0" not in text
    assert not preview.find_elements(By.CSS_SELECTOR, "em"), "no set name lost its underscores to emphasis"
    assert "ld3m_dm_latent_ipc1" in text  # from the "not evaluated yet" note


def test_report_html_and_plot_preview(viz) -> None:
    from selenium.webdriver.common.by import By

    page = open_metadata(viz, "report_table_html")
    assert page.find_elements(By.CSS_SELECTOR, "table") and "`" not in page.text
    assert "unseen mean" in page.text
    picture = open_metadata(viz, "report_plot")
    image = wait_for(lambda: picture.find_elements(By.CSS_SELECTOR, "img"), timeout=15)
    assert image, "the bar plot is previewed as an image"
    source = image[0].get_attribute("src")
    shown = base64.b64decode(source.removeprefix("data:image/png;base64,"))
    assert shown == newest(viz, "data/08_reporting/report/accuracy.png").read_bytes()


def test_report_csv_expands_to_every_column(viz) -> None:
    """Last in this module: the expanded preview is a modal over the flowchart."""
    from selenium.webdriver.common.by import By

    open_metadata(viz, "report_table_csv")
    viz.driver.find_element(By.CSS_SELECTOR, ".pipeline-metadata button.pipeline-metadata__link").click()
    modal = wait_for(lambda: viz.driver.find_elements(By.CSS_SELECTOR, ".pipeline-metadata-modal__preview table"),
                     timeout=15)
    assert modal, "the expanded table is drawn"
    headers = [th.text for th in modal[0].find_elements(By.CSS_SELECTOR, "th")]
    saved = next(csv.reader(io.StringIO(newest(viz, "data/08_reporting/report/table.csv").read_text())))
    assert headers == saved
    time.sleep(1.0)
    path = viz.root / "data" / "08_reporting" / "kedro-viz-report-table-expanded.png"
    assert viz.driver.save_screenshot(str(path))
    if os.environ.get("DIFFDISTILL_SAVE_SCREENSHOT") == "1":
        shutil.copyfile(path, PROJECT_ROOT / "docs" / "images" / "kedro-viz-report-table-expanded.png")
