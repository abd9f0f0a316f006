"""``launch ui``: the web dashboard of runs, sweeps, logs and curves (:mod:`launcher.ui`)."""

from __future__ import annotations

import click

from launcher.errors import LaunchError

UI_EXTRA = "pip install 'launch-video[ui]'"


@click.command(short_help="A web dashboard of runs, sweeps, live logs and curves.")
@click.option("--port", type=click.IntRange(0, 65535), default=8265, show_default=True,
              help="Port to serve on (0: a free one).")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (not loopback: a token is required).")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open it in a web browser.")
@click.option("--allow-stop", is_flag=True, help="Offer a Stop button for runs and experiments.")
@click.option("--poll", type=click.FloatRange(0.2, 60), default=2.0, show_default=True,
              help="Seconds between a page's updates.")  # fmt: skip
def ui(port: int, host: str, open_browser: bool, allow_stop: bool, poll: float) -> None:
    """Serve a read-only dashboard over the storage the other commands use: every run, a
    sweep's experiments with their parameters and best metric, an experiment's live log, curves
    and artifacts. Looking starts nothing; Stop exists only with --allow-stop."""
    try:
        from launcher.ui import server
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in ("starlette", "uvicorn", "anyio", "h11"):
            raise
        raise LaunchError(f"`launch ui` needs its web server (not installed): {UI_EXTRA}") from None
    import secrets

    token = None if server.is_loopback(host) else secrets.token_urlsafe(24)
    app = server.create_app(token=token, allow_stop=allow_stop, poll_s=poll)
    try:
        sock = server.listen(host, port)
    except OSError as e:
        raise LaunchError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    mode = "stop allowed" if allow_stop else "read-only"
    click.echo(f"launch ui: serving {url} ({mode}; Ctrl-C ends it)", err=False)
    if token:
        click.secho("the token is shown only this once; every request must carry it",
                    err=True, dim=True)  # fmt: skip
    click.get_text_stream("stdout").flush()
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    server.serve(sock, app)
