"""The dashboard's web server (Starlette on uvicorn): static pages, a read-only JSON API, verified
artifact downloads and, only with ``--allow-stop``, a stop action.

- Pages (``/``, ``/runs/RUN``, ``/runs/RUN/EXP``) are one static HTML file; its script reads
  ``/api/...`` and polls it. JSON answers carry an ETag, so a poll of what did not change is a
  ``304`` and the page redraws nothing. Logs are read by piece offset, never whole.
- Bound to a loopback address, every request must name a loopback host (a page on another site
  cannot reach it through DNS rebinding). Bound to any other address, every request must carry
  the token printed at start (``?token=`` once, then a cookie, or ``Authorization: Bearer``):
  ``401`` without it.
- Stop is a POST that needs the ``X-Launch-UI: stop`` header (a cross-site page cannot send it
  without a CORS preflight, which is never granted) and, when the browser says where it comes
  from (``Origin``, ``Sec-Fetch-Site``), this very origin.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from launcher.errors import LaunchError, NotFoundError, SpecError
from launcher.storage import manifest
from launcher.ui import views

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "launch_ui_token"
STOP_HEADER = "x-launch-ui"
log = logging.getLogger("launcher")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """``127.0.0.1`` of ``127.0.0.1:8265``, ``::1`` of ``[::1]:8265``."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


#: On every answer: nothing but this origin's own files, never inside another site's frame (a
#: framed page could trick a click on Stop), no content-type guessing.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; style-src 'self' 'unsafe-inline'; "
     b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]  # fmt: skip


class Guard:
    """ASGI middleware: the loopback Host check or the token, on every request; the security
    headers on every answer."""

    def __init__(self, app, *, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        return await self._guard(scope, receive, send_secured)

    async def _guard(self, scope, receive, send):
        request = Request(scope)
        if self.token is None:
            if not is_loopback(_host_name(request.headers.get("host", ""))):
                return await _text(403, "this dashboard answers only to a loopback host name")(
                    scope, receive, send
                )
            return await self.app(scope, receive, send)
        auth = request.headers.get("authorization", "")
        given = (
            request.query_params.get("token")
            or request.cookies.get(TOKEN_COOKIE)
            or (auth[7:] if auth.lower().startswith("bearer ") else "")
        )
        if not given or not secrets.compare_digest(given.encode(), self.token.encode()):
            response = _text(401, "401: this dashboard needs the token `launch ui` printed")
            return await response(scope, receive, send)
        if "token" in request.query_params and request.method == "GET":
            # the token leaves the address bar for an HttpOnly cookie
            kept = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            rest = urlencode(kept)
            target = request.url.path + (f"?{rest}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _text(status: int, text: str) -> Response:
    return Response(text + "\n", status_code=status, media_type="text/plain")


def _json(request: Request, data) -> Response:
    """JSON with an ETag of its bytes; ``304`` when the client has them already."""
    body = json.dumps(data, separators=(",", ":"), default=str).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, SpecError) else 502
    return JSONResponse({"error": str(exc)}, status_code=status)


def create_app(
    *, token: str | None = None, allow_stop: bool = False, poll_s: float = 2.0
) -> Starlette:
    """The dashboard as an ASGI app. ``token``: required on every request (None: loopback
    only); ``allow_stop``: offer and accept Stop; ``poll_s``: how often pages poll."""
    page = (STATIC / "index.html").read_text()
    config = json.dumps({"allowStop": allow_stop, "pollMs": int(poll_s * 1000)})
    page = page.replace("{{CONFIG}}", config.replace("<", "\\u003c"))

    def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    def api_runs(request: Request) -> Response:
        return _json(request, views.runs_page())

    def api_run(request: Request) -> Response:
        return _json(request, views.run_page(request.path_params["run"]))

    def api_exp(request: Request) -> Response:
        p = request.path_params
        return _json(request, views.experiment_page(p["run"], p["exp"]))

    def api_metrics(request: Request) -> Response:
        p = request.path_params
        return _json(request, views.experiment_metrics(p["run"], p["exp"]))

    def api_log(request: Request) -> Response:
        p = request.path_params
        raw = request.query_params.get("offset")
        if raw is not None and not raw.isdigit():
            return JSONResponse({"error": f"offset must be a piece number, not {raw!r}"}, 400)
        return JSONResponse(views.log_tail(p["run"], p["exp"], int(raw) if raw else None))

    def api_artifacts(request: Request) -> Response:
        p = request.path_params
        return _json(request, views.artifacts(p["run"], p["exp"]))

    def download(request: Request) -> Response:
        p = request.path_params
        problem = manifest.path_problem(p["path"])  # the rule every pull obeys
        if problem:
            return _text(400, f"refusing artifact path {p['path']!r}: {problem}")
        folder = tempfile.mkdtemp(prefix="launch-ui-")
        try:
            path = views.fetch_artifact(p["run"], p["exp"], p["path"], folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(path, filename=path.name,
                            background=BackgroundTask(shutil.rmtree, folder, True))  # fmt: skip

    def stop(request: Request) -> Response:
        if not allow_stop:
            return _text(403, "read-only dashboard: start it with `launch ui --allow-stop`")
        if request.headers.get(STOP_HEADER) != "stop":
            return _text(403, f"a stop needs the {STOP_HEADER}: stop header")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _text(403, "cross-site stop refused")
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return _text(403, "cross-site stop refused")
        p = request.path_params
        target = p["run"] + (f"/{p['exp']}" if "exp" in p else "")
        from launcher.runs import RunContext, stop_run

        RunContext(target).experiment_ids()  # 404 before anything is written

        def run_stop() -> None:
            try:
                stop_run(target)
            except LaunchError as e:
                log.warning("stop %s: %s", target, e)

        threading.Thread(target=run_stop, name=f"stop-{target}", daemon=True).start()
        return JSONResponse({"stopping": target}, status_code=202)

    routes = [
        Route("/", index),
        Route("/runs/{run}", index),
        Route("/runs/{run}/{exp}", index),
        Route("/api/runs", api_runs),
        Route("/api/runs/{run}/stop", stop, methods=["POST"]),
        Route("/api/runs/{run}", api_run),
        Route("/api/runs/{run}/{exp}/stop", stop, methods=["POST"]),
        Route("/api/runs/{run}/{exp}/metrics", api_metrics),
        Route("/api/runs/{run}/{exp}/log", api_log),
        Route("/api/runs/{run}/{exp}/artifacts", api_artifacts),
        Route("/api/runs/{run}/{exp}", api_exp),
        Route("/download/{run}/{exp}/{path:path}", download),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={LaunchError: _error})
    app.add_middleware(Guard, token=token)
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket, app: Starlette) -> None:
    """Serve ``app`` on a listening socket until SIGINT or SIGTERM."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
