"""The dashboard in a real headless Chromium: what each page shows over runs in storage, and a
running experiment's log and curve updating without a reload. Each test saves a screenshot
under its tmp dir (``LAUNCH_UI_DOCS=DIR`` also writes the run page's to DIR, for the README)."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from launcher.storage import records
from tests.launcher.ui.uihelpers import (
    SWEEP_BEST,
    SWEEP_LRS,
    add_log_piece,
    metrics_csv,
    ship_metrics,
)

pytestmark = pytest.mark.browser
pytest.importorskip("starlette", reason="the ui extra (launch-video[ui]) is not installed")
WAIT_S = 20
# resolved now: the tests run in a tmp project folder
DOCS = Path(os.environ["LAUNCH_UI_DOCS"]).absolute() if os.environ.get("LAUNCH_UI_DOCS") else None


def wait_until(driver, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"timed out after {WAIT_S}s waiting for {what}"
    )


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector: str) -> str:
    found = css(driver, selector)
    return found[0].text if found else ""


def table_rows(driver, selector: str) -> dict[str, list[str]]:
    """A table's rows read at once (the page may redraw between two element lookups)."""
    return dict(driver.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')].map(r =>"
        " [r.dataset.id, [...r.cells].map(c => c.innerText.trim())])", selector))  # fmt: skip


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {  # the whole page, not the window
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 3000), "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def test_runs_page_names_the_run(browser, sweep, live_run, ui_server, tmp_path):
    server = ui_server()
    browser.get(server.base + "/")
    wait_until(browser, lambda d: sweep in text_of(d, "#runs"), "the sweep in the runs table")
    rows = table_rows(browser, "#runs")
    assert list(rows) == ["live-run", sweep]  # newest first
    assert rows[sweep][:5] == [sweep, "local", "t3.medium", "succeeded", "3/3"]
    assert rows["live-run"][3:5] == ["running", "0/1"]
    css(browser, '#filters button[data-status="succeeded"]')[0].click()
    wait_until(browser, lambda d: list(table_rows(d, "#runs")) == [sweep], "the status filter")
    screenshot(browser, tmp_path, "runs")
    # live: a run that finishes moves under the filter, without a reload
    browser.execute_script("window.__sameDocument = true")
    name, storage, _ = live_run
    records.finish(storage, name, "exp-0", state="succeeded", exit_code=0, ended=time.time())
    wait_until(browser, lambda d: list(table_rows(d, "#runs")) == [name, sweep], "the new state")
    assert browser.execute_script("return window.__sameDocument") is True


def test_run_page_shows_the_experiments_params_and_best_metric(browser, sweep, ui_server,
                                                               tmp_path):  # fmt: skip
    server = ui_server()
    browser.get(f"{server.base}/runs/{sweep}")
    wait_until(browser, lambda d: len(css(d, "#experiments tbody tr")) == 3, "three experiments")
    headers = [th.text for th in css(browser, "#experiments th")]
    assert headers[:3] == ["experiment", "lr", "status"] and "best val_acc1" in headers
    rows = table_rows(browser, "#experiments")
    best_col, rank_col = headers.index("best val_acc1"), headers.index("rank")
    for i, (exp, best) in enumerate(SWEEP_BEST.items()):
        cells = rows[exp]
        assert cells[0] == exp and float(cells[1]) == SWEEP_LRS[i] and cells[2] == "succeeded"
        assert float(cells[best_col]) == best
    assert rows["exp-1"][rank_col] == "1"
    # sortable: by best metric, the best first
    css(browser, '#experiments th[data-key="best"]')[0].click()
    wait_until(browser, lambda d: list(table_rows(d, "#experiments")) == ["exp-1", "exp-0",
               "exp-2"], "sorting by the best metric")  # fmt: skip
    # the metric against the parameter, and every experiment's curves overlaid
    wait_until(browser, lambda d: css(d, '#param-charts [data-param="lr"] circle'), "lr chart")
    assert len(css(browser, '#param-charts [data-param="lr"] circle')) == 3
    curves = {c.get_attribute("data-metric"): int(c.get_attribute("data-points"))
              for c in css(browser, "#curves .chart")}  # fmt: skip
    assert curves == {"val_acc1": 9, "train_loss": 9}  # 3 experiments x 3 epochs each
    assert css(browser, "#curves canvas")
    shot = screenshot(browser, tmp_path, "run")
    if DOCS is not None:
        (DOCS / "ui-run.png").write_bytes(shot.read_bytes())


def test_experiment_page_shows_its_curve_log_and_artifacts(browser, sweep, ui_server, tmp_path):
    server = ui_server()
    browser.get(f"{server.base}/runs/{sweep}/exp-1")
    wait_until(browser, lambda d: "done exp-1" in text_of(d, "#log"), "the log")
    assert text_of(browser, "#log").startswith("start_step=0 attempt=1 lr=0.01")
    wait_until(browser, lambda d: css(d, '#metrics [data-metric="val_acc1"] canvas'), "curve")
    points = css(browser, '#metrics [data-metric="val_acc1"]')[0].get_attribute("data-points")
    assert points == "3"
    assert "--lr 0.01" in text_of(browser, "#args")
    assert "lr" in text_of(browser, "#params") and "0.01" in text_of(browser, "#params")
    assert "node-0" in text_of(browser, "#history")
    wait_until(browser, lambda d: "labels.txt" in text_of(d, "#artifacts"), "the artifacts")
    links = {a.text: a.get_attribute("href") for a in css(browser, "#artifacts a")}
    assert set(links) == {"checkpoints/best.ckpt", "labels.txt", "metrics.csv"}
    screenshot(browser, tmp_path, "experiment")
    # the download is the stored file, verified against the manifest
    got = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => r.text()).then(done);",
        links["labels.txt"],
    )
    assert got == "archery\nhigh_jump\n"


def test_running_experiment_updates_log_and_curve_without_reload(browser, live_run, ui_server,
                                                                 tmp_path):  # fmt: skip
    name, storage, art = live_run
    server = ui_server()
    browser.get(f"{server.base}/runs/{name}/exp-0")
    wait_until(browser, lambda d: "step 1" in text_of(d, "#log"), "the first log piece")
    wait_until(browser, lambda d: css(d, '#metrics [data-metric="val_acc1"]'), "the curve")
    browser.execute_script("window.__sameDocument = true")  # gone if the page reloads
    add_log_piece(storage, name, "exp-0", "step 2\nstep 3\n")
    ship_metrics(storage, name, "exp-0", metrics_csv(0.6, 3), art)
    wait_until(browser, lambda d: "step 3" in text_of(d, "#log"), "the new log piece")
    wait_until(browser, lambda d: css(d, '#metrics [data-metric="val_acc1"]')[0]
               .get_attribute("data-points") == "3", "the curve's new points")  # fmt: skip
    assert browser.execute_script("return window.__sameDocument") is True
    log = text_of(browser, "#log")
    assert log.count("step 1") == 1 and log.index("step 1") < log.index("step 3")
    assert int(css(browser, "#log")[0].get_attribute("data-offset")) == 2
    screenshot(browser, tmp_path, "live")


def test_stop_button_only_with_allow_stop(browser, live_run, ui_server, tmp_path):
    from tests.launcher.waiting import wait_for

    name, storage, _ = live_run
    read_only = ui_server()
    browser.get(f"{read_only.base}/runs/{name}/exp-0")
    wait_until(browser, lambda d: "running" in text_of(d, "h1"), "the experiment's state")
    assert not css(browser, "#stop")
    server = ui_server("--allow-stop")
    browser.get(f"{server.base}/runs/{name}/exp-0")
    wait_until(browser, lambda d: css(d, "#stop"), "the Stop button")
    css(browser, "#stop")[0].click()
    browser.switch_to.alert.accept()  # "Stop live-run/exp-0?"
    wait_until(browser, lambda d: "Stopping" in text_of(d, "#stop"), "the stop to be sent")
    wait_for(lambda: storage.exists(f"runs/{name}/experiments/exp-0/stop"), what="stop flag")
    screenshot(browser, tmp_path, "stop")


def test_token_url_opens_the_dashboard_on_a_non_loopback_bind(browser, sweep, ui_server,
                                                              tmp_path):  # fmt: skip
    server = ui_server("--host", "0.0.0.0")
    base = f"http://127.0.0.1:{server.port}"
    browser.get(f"{base}/runs/{sweep}")
    wait_until(browser, lambda d: "401" in d.find_element("tag name", "body").text, "the 401")
    browser.get(f"{base}/runs/{sweep}?token={server.url.split('?token=')[1]}")
    wait_until(browser, lambda d: len(table_rows(d, "#experiments")) == 3, "the run's page")
    assert "token" not in browser.current_url  # traded for an HttpOnly cookie
    assert browser.execute_script("return document.cookie") == ""
    screenshot(browser, tmp_path, "token")


def test_a_big_sweep_shows_a_page_of_rows_sorted_over_all(browser, home, ui_server, tmp_path):
    from launcher.runs import prepare_run
    from tests.launcher.local.localjob import NoAgents, make_spec

    spec = make_spec(name="big", script_args=["--bs", "range(150)"], max_experiments=150)
    name = prepare_run(spec, NoAgents())
    server = ui_server()
    browser.get(f"{server.base}/runs/{name}")
    wait_until(browser, lambda d: len(table_rows(d, "#experiments")) == 100, "the first 100")
    css(browser, '#experiments th[data-key="param:bs"]')[0].click()  # ascending
    css(browser, '#experiments th[data-key="param:bs"]')[0].click()  # descending, over all 150
    wait_until(browser, lambda d: next(iter(table_rows(d, "#experiments"))) == "exp-149",
               "the sort over every experiment")  # fmt: skip
    css(browser, "#experiments-more")[0].click()
    wait_until(browser, lambda d: len(table_rows(d, "#experiments")) == 150, "all 150 rows")
    assert list(table_rows(browser, "#experiments"))[-1] == "exp-0"
    screenshot(browser, tmp_path, "big")
