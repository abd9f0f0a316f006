"""`launch ui` over HTTP (a real server process) and its views in-process: the token on a
non-loopback bind, downloads that never leave the run, Stop only when allowed and same-origin,
ETags, logs read by offset, and looking that never reconciles."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from launcher.storage import records
from tests.launcher.local.localjob import NoAgents
from tests.launcher.ui.uihelpers import UiServer, add_log_piece
from tests.launcher.waiting import wait_for

pytest.importorskip("starlette", reason="the ui extra (launch-video[ui]) is not installed")


def request(base: str, path: str, *, method: str = "GET", headers: dict | None = None):
    """(status, headers, body) of one request, the path sent exactly as given (no
    normalisation of ``..``, as a hostile client would send it)."""
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def own_address() -> str | None:
    """A non-loopback address of this host, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_help_imports_no_web_server_torch_or_boto3():
    code = "import sys, runpy; sys.argv = ['launch', '--help']; runpy.run_module('launcher')"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert "ui" in out.stdout and "dashboard" in out.stdout
    modules = {ln.split("|")[-1].strip() for ln in out.stderr.splitlines() if "|" in ln}
    heavy = {m for m in modules if m.split(".")[0]
             in ("starlette", "uvicorn", "anyio", "torch", "boto3", "botocore")}  # fmt: skip
    assert not heavy, sorted(heavy)
    # and the server itself imports no torch, no boto3
    code = (
        "import sys, launcher.cli.ui, launcher.ui.server; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'boto3'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_non_loopback_bind_needs_the_token_on_every_request(home, sweep, ui_server):
    server = ui_server("--host", "0.0.0.0")
    token = server.url.split("?token=", 1)[1]
    assert len(token) >= 20
    addresses = ["127.0.0.1"] + ([own_address()] if own_address() else [])
    for addr in addresses:
        base = f"http://{addr}:{server.port}"
        for path in ("/", "/api/runs", f"/api/runs/{sweep}", "/static/app.js",
                     f"/download/{sweep}/exp-0/labels.txt"):  # fmt: skip
            assert request(base, path)[0] == 401, path
            assert request(base, path + "?token=wrong")[0] == 401, path
            assert request(base, path, headers={"Authorization": "Bearer nope"})[0] == 401
        bearer = {"Authorization": f"Bearer {token}"}
        status, _, body = request(base, "/api/runs", headers=bearer)
        assert status == 200 and json.loads(body)["runs"][0]["name"] == sweep
        # a page opened with ?token= trades it for an HttpOnly cookie and drops it from the URL
        status, headers, _ = request(base, f"/runs/{sweep}?token={token}")
        assert status == 303 and headers["location"] == f"/runs/{sweep}"
        cookie = headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        jar = {"Cookie": cookie.split(";", 1)[0]}
        assert request(base, f"/api/runs/{sweep}", headers=jar)[0] == 200
        status, _, body = request(base, f"/download/{sweep}/exp-0/labels.txt", headers=jar)
        assert (status, body) == (200, b"archery\nhigh_jump\n")


def test_loopback_bind_needs_no_token_but_a_loopback_host_name(home, sweep, ui_server):
    server = ui_server()
    assert "token" not in server.url and server.url.startswith("http://127.0.0.1:")
    assert request(server.base, "/api/runs")[0] == 200
    # a page elsewhere that rebinds its own name to 127.0.0.1 still cannot read it
    assert request(server.base, "/api/runs", headers={"Host": "evil.example"})[0] == 403


@pytest.mark.parametrize("path", [
    "../../run.json", "../exp-1/artifacts/labels.txt", "..%2F..%2Frun.json",
    "%2E%2E/%2E%2E/run.json", "checkpoints/../../../run.json", "/etc/passwd", "a//b",
])  # fmt: skip
def test_artifact_paths_outside_the_run_are_refused(home, sweep, ui_server, path):
    server = ui_server()
    status, _, body = request(server.base, f"/download/{sweep}/exp-0/{path}")
    assert status == 400, (status, body)
    assert b"refusing artifact path" in body


def test_download_serves_only_what_the_manifest_lists_verified(home, sweep, ui_server):
    server = ui_server()
    storage = NoAgents().storage()
    assert request(server.base, f"/download/{sweep}/exp-0/labels.txt")[2] == (
        b"archery\nhigh_jump\n"
    )
    # stored but not listed (a file dropped beside the artifacts): not served
    storage.write_text(records.exp_key(sweep, "exp-0", "artifacts", "extra.txt"), "x")
    assert request(server.base, f"/download/{sweep}/exp-0/extra.txt")[0] == 404
    assert request(server.base, f"/download/{sweep}/exp-9/labels.txt")[0] == 404
    assert request(server.base, f"/download/{sweep}/exp-x/labels.txt")[0] == 400
    # bytes that differ from the manifest: refused, as a pull refuses them
    storage.write_text(records.exp_key(sweep, "exp-0", "artifacts", "labels.txt"), "forged\n")
    status, _, body = request(server.base, f"/download/{sweep}/exp-0/labels.txt")
    assert status == 502 and b"corrupt" in body and b"forged" not in body


def test_stop_only_with_allow_stop_and_only_same_origin(home, live_run, ui_server):
    name, storage, _ = live_run
    stop_path = f"/api/runs/{name}/exp-0/stop"
    flag = records.exp_key(name, "exp-0", "stop")
    ok = {"X-Launch-UI": "stop"}
    read_only = ui_server()
    assert request(read_only.base, stop_path, method="POST", headers=ok)[0] == 403
    assert request(read_only.base, stop_path)[0] == 405  # a GET is never a stop
    server = ui_server("--allow-stop")
    origin = f"http://127.0.0.1:{server.port}"
    for headers in (
        {},  # a plain cross-site form post cannot add the header
        {**ok, "Origin": "http://evil.example"},
        {**ok, "Origin": origin, "Sec-Fetch-Site": "cross-site"},
    ):
        assert request(server.base, stop_path, method="POST", headers=headers)[0] == 403
        assert not storage.exists(flag)
    assert request(server.base, f"/api/runs/{name}/exp-7/stop", method="POST",
                   headers=ok)[0] == 404  # fmt: skip
    same = {**ok, "Origin": origin, "Sec-Fetch-Site": "same-origin"}
    status, _, body = request(server.base, stop_path, method="POST", headers=same)
    assert status == 202 and json.loads(body) == {"stopping": f"{name}/exp-0"}
    wait_for(lambda: storage.exists(flag), what="the stop request in storage")
    status, _, body = request(server.base, f"/api/runs/{name}/stop", method="POST", headers=same)
    assert status == 202 and json.loads(body) == {"stopping": name}
    wait_for(lambda: storage.exists(f"runs/{name}/stop"), what="the run's stop request")


def test_unchanged_answers_are_304_by_etag(home, sweep, live_run, ui_server):
    name, storage, _ = live_run
    server = ui_server()
    for path in ("/api/runs", f"/api/runs/{sweep}", f"/api/runs/{sweep}/exp-0/metrics",
                 f"/api/runs/{sweep}/exp-0"):  # fmt: skip
        status, headers, _ = request(server.base, path)
        assert status == 200 and headers["etag"]
        again = request(server.base, path, headers={"If-None-Match": headers["etag"]})
        assert again[0] == 304 and again[2] == b"", path
    _, headers, _ = request(server.base, f"/api/runs/{name}/exp-0")
    records.finish(storage, name, "exp-0", state="succeeded", exit_code=0, ended=1.0)
    assert request(server.base, f"/api/runs/{name}/exp-0",
                   headers={"If-None-Match": headers["etag"]})[0] == 200  # fmt: skip


def test_log_is_read_by_offset_only_new_pieces(home, live_run, monkeypatch):
    from launcher.storage.root import Storage
    from launcher.ui import views

    name, storage, _ = live_run
    add_log_piece(storage, name, "exp-0", "step 2\n")
    reads: list[str] = []
    real = Storage.read_bytes
    monkeypatch.setattr(Storage, "read_bytes", lambda self, key: reads.append(key) or
                        real(self, key))  # fmt: skip
    first = views.log_tail(name, "exp-0")
    assert first == {"text": "start_step=0 attempt=1\nstep 1\nstep 2\n", "next": 2,
                     "skipped": 0, "done": False}  # fmt: skip
    reads.clear()
    assert views.log_tail(name, "exp-0", 2)["text"] == ""
    assert not [k for k in reads if "/logs/" in k]
    add_log_piece(storage, name, "exp-0", "step 3\n")
    reads.clear()
    new = views.log_tail(name, "exp-0", 2)
    assert (new["text"], new["next"]) == ("step 3\n", 3)
    assert [k for k in reads if "/logs/" in k] == [records.exp_key(name, "exp-0", "logs",
                                                                   "000002.log")]  # fmt: skip
    # a long log: the first look is its tail, and says how much it left out
    monkeypatch.setattr(views, "LOG_TAIL_BYTES", 10)
    tail = views.log_tail(name, "exp-0")
    assert tail["text"] == "step 2\nstep 3\n" and tail["skipped"] == 1


def test_looking_never_reconciles_or_starts_nodes(home, live_run, sweep, monkeypatch):
    """A running experiment whose node is gone: `launch status` would re-queue it; the
    dashboard only shows it."""
    import launcher.runs.reconcile as rec
    from launcher.backends.local import LocalBackend
    from launcher.ui import views

    def refuse(*a, **k):
        raise AssertionError("the dashboard reconciled")

    monkeypatch.setattr(rec, "reconcile_run", refuse)
    monkeypatch.setattr(LocalBackend, "submit", refuse)
    name, storage, _ = live_run
    assert {r["name"] for r in views.runs_page()["runs"]} == {name, sweep}
    page = views.run_page(name)
    assert page["experiments"][0]["state"] == "running" and not page["finished"]
    assert views.experiment_page(name, "exp-0")["experiment"]["state"] == "running"
    assert records.read_status(storage, name, "exp-0")["state"] == "running"


def test_run_page_data_has_params_best_and_rank(home, sweep):
    from launcher.ui import views

    page = views.run_page(sweep)
    assert page["params"] == ["lr"] and page["metric"] == "val_acc1" and page["finished"]
    got = {e["id"]: (e["params"]["lr"], e["best"], e["rank"]) for e in page["experiments"]}
    assert got == {"exp-0": (0.1, 0.55, 2), "exp-1": (0.01, 0.8, 1), "exp-2": (0.001, 0.3, 3)}
    assert set(page["curves"]) == {"val_acc1", "train_loss"}
    assert page["curves"]["val_acc1"]["exp-1"][-1] == (2, 0.8)


def test_ui_without_its_extra_says_what_to_install(home, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "starlette.py").write_text("raise ModuleNotFoundError(name='starlette')\n")
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    out = subprocess.run([sys.executable, "-m", "launcher", "ui", "--port", "0"],
                         capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert out.returncode == 1 and "launch-video[ui]" in out.stderr, out.stderr


def test_a_taken_port_is_one_line(home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "launcher", "ui", "--port", str(port)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and f"cannot serve on 127.0.0.1:{port}" in out.stderr


def test_urls_of_the_pages_answer_the_page(home, sweep, ui_server):
    server = ui_server()
    for path in ("/", f"/runs/{sweep}", f"/runs/{sweep}/exp-0"):
        with urllib.request.urlopen(server.base + path, timeout=30) as r:
            assert r.status == 200 and b"/static/app.js" in r.read()
            # never framed by another site (a click on Stop cannot be tricked), no guessing
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.base}/api/runs/no-such-run", timeout=30)
    assert e.value.code == 404 and b"not found" in e.value.read()


def test_open_hands_the_url_to_the_web_browser(home, tmp_path, monkeypatch):
    opened = tmp_path / "opened.txt"
    script = tmp_path / "browser.py"
    script.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    monkeypatch.setenv("BROWSER", f"{sys.executable} {script} %s")
    server = UiServer("--open")
    try:
        wait_for(opened.exists, what="the browser to be started")
        wait_for(lambda: opened.read_text() == server.url, what="the URL it was given")
    finally:
        server.stop()
