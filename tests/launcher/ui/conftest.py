"""Fixtures for the dashboard's tests: runs written into a private LAUNCH_HOME's storage as
agents write them (a finished 3-point sweep, a running experiment), `launch ui` started as a
process on a free port, and a headless Chromium driven by Selenium."""

from __future__ import annotations

import os
import time

import pytest

from launcher.storage import records
from tests.launcher.local.localjob import JOB, NoAgents, make_spec
from tests.launcher.ui.uihelpers import (
    CHROMEDRIVER,
    CHROMIUM,
    SWEEP_BEST,
    SWEEP_LRS,
    UiServer,
    add_log_piece,
    metrics_csv,
    ship_metrics,
    start_attempt,
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "launch-home"
    monkeypatch.setenv("LAUNCH_HOME", str(h))
    w = tmp_path / "project"
    w.mkdir()
    (w / "job.py").write_text(JOB)
    monkeypatch.chdir(w)
    return h


@pytest.fixture
def sweep(home, tmp_path) -> str:
    """A finished 3-point sweep over --lr: each experiment with a metrics.csv, a log and a
    labels.txt, written where and as an agent writes them."""
    from launcher.runs import prepare_run

    lrs = ", ".join(str(v) for v in SWEEP_LRS)
    spec = make_spec(name="lr-sweep", script_args=["--lr", f"[{lrs}]", "--steps", "3"])
    name = prepare_run(spec, NoAgents())
    storage = NoAgents().storage()
    t0 = time.time()
    for i, (exp, best) in enumerate(SWEEP_BEST.items()):
        started = t0 + i
        start_attempt(storage, name, exp, started)
        art = tmp_path / "art" / exp
        (art / "checkpoints").mkdir(parents=True)
        (art / "labels.txt").write_text("archery\nhigh_jump\n")
        (art / "checkpoints" / "best.ckpt").write_bytes(os.urandom(64))
        ship_metrics(storage, name, exp, metrics_csv(best, 3), art)
        add_log_piece(storage, name, exp, f"start_step=0 attempt=1 lr={SWEEP_LRS[i]}\n")
        add_log_piece(storage, name, exp, f"epoch 2 val_acc1={best}\ndone {exp}\n")
        records.finish(storage, name, exp, state="succeeded", exit_code=0, ended=started + 95,
                       metrics={"val_acc1": best})  # fmt: skip
    return name


@pytest.fixture
def live_run(home, tmp_path):
    """One experiment that is running: the test ships more log and metrics while it looks."""
    from launcher.runs import prepare_run

    name = prepare_run(make_spec(name="live-run", script_args=["--steps", "9"]), NoAgents())
    storage = NoAgents().storage()
    start_attempt(storage, name, "exp-0", time.time())
    art = tmp_path / "art-live"
    ship_metrics(storage, name, "exp-0", metrics_csv(0.2, 1), art)
    add_log_piece(storage, name, "exp-0", "start_step=0 attempt=1\nstep 1\n")
    return name, storage, art


@pytest.fixture
def ui_server(home):
    """Start `launch ui` with extra args: ``ui_server("--allow-stop")``; stopped at teardown."""
    started: list[UiServer] = []

    def start(*args: str) -> UiServer:
        started.append(UiServer(*args))
        return started[-1]

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def browser_session(tmp_path_factory):
    """One headless Chromium for the session (fresh profile), through Debian's chromedriver."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver)")  # fmt: skip
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def browser(browser_session):
    browser_session.delete_all_cookies()
    return browser_session
