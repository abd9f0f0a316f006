"""The ``launch`` command: parse, call the library, print. Nothing here a Python user could not
reach through :mod:`launcher.runs.state` and friends.

Every :class:`LaunchError` is one red line on stderr and exit code 1 (``--debug`` shows the
traceback); usage errors are click's (exit code 2). Heavy modules are imported inside commands so
``launch --help`` and ``launch status`` stay fast.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from launcher.errors import LaunchError


class LaunchGroup(click.Group):
    """Turns LaunchError (and, as a last resort, any other error) into one red line and exit
    code 1, unless --debug."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LaunchError as e:
            if ctx.meta.get("launch.debug"):
                raise
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # usage errors, --help, a declined confirmation: click reports them
        except BrokenPipeError:
            # `launch status | head`: the reader is gone. click's main catches EPIPE, exits 1
            # and silences the last flush; nothing to report
            raise
        except Exception as e:
            # a bug or an error no layer translated (a cloud SDK's): still one line by default
            if ctx.meta.get("launch.debug"):
                raise
            click.secho(f"error: {type(e).__name__}: {e} (unexpected; `launch --debug ...` "
                        "shows the traceback)", fg="red", err=True)  # fmt: skip
            ctx.exit(1)


class _WarningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.secho(f"warning: {record.getMessage()}", fg="yellow", err=True)


@click.group(cls=LaunchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="launch-video", prog_name="launch")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Launch training jobs and sweeps on this machine or on AWS, Grid style.

    \b
      launch run --instance g4dn.xlarge --gpus 1 trainer/train.py --lr "[0.01, 0.001]"
      launch status                 launch logs RUN -f
      launch artifacts pull RUN     launch predict RUN video.mp4
    """
    ctx.meta["launch.debug"] = debug
    logger = logging.getLogger("launcher")
    if not any(isinstance(h, _WarningHandler) for h in logger.handlers):
        logger.addHandler(_WarningHandler(level=logging.WARNING))
        logger.propagate = False


def main() -> None:
    """Console entry point (``launch``)."""
    try:
        try:
            cli(prog_name="launch")
        finally:
            sys.stdout.flush()  # what is still buffered goes now, while EPIPE can be caught
    except BrokenPipeError:
        # the reader left (`launch status | head`): no "Exception ignored" at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _register() -> None:
    from launcher.cli import data, results, run, runs, settings

    for command in (run.run, runs.status, runs.logs, runs.stop, runs.delete, data.datastore,
                    data.artifacts, results.metrics, results.predict, settings.instances,
                    settings.config):  # fmt: skip
        cli.add_command(command)
    cli.add_command(__import__("launcher.cli.ui", fromlist=["ui"]).ui)  # launch ui (dashboard)


_register()
