"""Helpers for the AWS tests: a stand-in trainer, preparing runs, playing an instance's part."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path


def launch_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m launcher ARGS`` run in ``cwd`` as a user would, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def user_data_of(instance_id: str) -> str:
    import boto3

    attr = boto3.client("ec2").describe_instance_attribute(
        InstanceId=instance_id, Attribute="userData"
    )
    return base64.b64decode(attr["UserData"]["Value"]).decode()


SHUTDOWN_SHIM = """#!/bin/bash
# Plays the instance's power-off: shutdown behaviour is terminate, so `now` terminates it.
echo "shutdown $*" >> "$LAUNCH_TEST_LOG"
if [ "$2" = "now" ]; then
    aws ec2 terminate-instances --instance-ids "$LAUNCH_TEST_INSTANCE" > /dev/null
fi
"""
PYTHON3_SHIM = """#!/bin/bash
# The instance's python3: `-m venv DIR` makes DIR/bin/python this same shim, `-m pip` is logged
# (the package is already installed here, and there is no index), anything else runs for real.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    dir="${@: -1}"; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then echo "pip $*" >> "$LAUNCH_TEST_LOG"; exit 0; fi
exec REAL_PYTHON "$@"
"""


def instance_metadata(instance_id: str) -> dict[str, str]:
    """What IMDS would tell the instance about itself, from moto's record of it."""
    import boto3

    desc = boto3.client("ec2").describe_instances(InstanceIds=[instance_id])
    (inst,) = [i for r in desc["Reservations"] for i in r["Instances"]]
    return {
        "instance-id": instance_id,
        "ami-launch-index": str(inst.get("AmiLaunchIndex", 0)),
        "local-ipv4": inst.get("PrivateIpAddress", ""),
        "placement/availability-zone": inst["Placement"]["AvailabilityZone"],
    }


_PLAYED_IMDS: list[FakeImds] = []


def close_played_imds() -> None:
    """Stop the metadata services :func:`start_instance` started (the aws fixture's teardown)."""
    while _PLAYED_IMDS:
        _PLAYED_IMDS.pop().close()


def start_instance(
    instance_id: str, work: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Be the instance moto will not be: run its real user-data with bash (in the background).

    The one change is the work directory (``/opt/launch`` is not writable here). ``shutdown``
    and ``python3`` are shims (a logged power-off that terminates the instance; pip logged),
    the ``aws`` CLI and the agent are the real ones, against the same moto server. Its own
    IMDSv2 (a :class:`FakeImds` answering with moto's launch index and private IP) stands in for
    169.254.169.254, unless ``env`` names another ``AWS_EC2_METADATA_SERVICE_ENDPOINT``.
    """
    env = dict(env or {})
    if "AWS_EC2_METADATA_SERVICE_ENDPOINT" not in env:
        imds = FakeImds(instance_metadata(instance_id))
        _PLAYED_IMDS.append(imds)
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
    script = user_data_of(instance_id)
    lines = script.splitlines()
    assert sum(line.startswith("LAUNCH_WORK_DIR=") for line in lines) == 1
    script = "\n".join(
        f"LAUNCH_WORK_DIR={work}" if line.startswith("LAUNCH_WORK_DIR=") else line for line in lines
    )
    shims = work.parent / f"{work.name}-shims"
    shims.mkdir(parents=True, exist_ok=True)
    (shims / "shutdown").write_text(SHUTDOWN_SHIM)
    (shims / "python3").write_text(PYTHON3_SHIM.replace("REAL_PYTHON", sys.executable))
    for shim in shims.iterdir():
        shim.chmod(0o755)
    (work.parent / f"{work.name}-user-data.sh").write_text(script)
    full_env = dict(os.environ)
    full_env.update(
        PATH=f"{shims}:{Path(sys.executable).parent}:/usr/bin:/bin",
        LAUNCH_TEST_LOG=str(calls_log(work)),
        LAUNCH_TEST_INSTANCE=instance_id,
        LAUNCH_HEARTBEAT_S="0.3",
        LAUNCH_ARTIFACT_SYNC_S="0.3",
        LAUNCH_STOP_GRACE_S="5",
    )
    full_env.update(env or {})
    return subprocess.Popen(
        ["bash", "-c", script],
        env=full_env,
        start_new_session=True,  # a test can kill the whole "machine" at once
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def calls_log(work: Path) -> Path:
    """What the shims saw (shutdown and pip calls) for one played instance."""
    return work.parent / f"{work.name}-calls.log"


def play_instance(instance_id: str, work: Path, env=None, timeout: float = 120) -> tuple[int, str]:
    """Run an instance's user-data to the end; its exit code and output."""
    proc = start_instance(instance_id, work, env)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


class FakeImds:
    """An IMDSv2 stand-in: PUT /latest/api/token hands out tokens; every read needs one (401
    otherwise); the spot notice is 404 until :meth:`interrupt`; ``meta`` maps other meta-data
    paths (``ami-launch-index``, ``local-ipv4``) to their answers, 404 for the rest."""

    def __init__(self, meta: dict[str, str] | None = None):
        import json
        import secrets
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        imds = self
        self.notice: dict | None = None
        self.meta = dict(meta or {})
        self.tokens: set[str] = set()
        self.reads = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: str = "") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def do_PUT(self):
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    return self._send(400)
                token = secrets.token_hex(8)
                imds.tokens.add(token)
                self._send(200, token)

            def do_GET(self):
                if self.headers.get("X-aws-ec2-metadata-token") not in imds.tokens:
                    return self._send(401)
                asked = self.path.removeprefix("/latest/meta-data/")
                if asked in imds.meta:
                    return self._send(200, imds.meta[asked])
                if self.path != "/latest/meta-data/spot/instance-action":
                    return self._send(404)
                imds.reads += 1
                if imds.notice is None:
                    return self._send(404)
                self._send(200, json.dumps(imds.notice))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def interrupt(self) -> None:
        self.notice = {"action": "terminate", "time": "2026-01-01T00:02:00Z"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


TRAIN_SCRIPT = '''"""Stand-in trainer: resumable steps, checkpoint per step, Lightning-like CSV."""
import argparse, json, os, pathlib, time

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3)
p.add_argument("--lr", type=float, default=0.1)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--note", default=None)
a = p.parse_args()
art = pathlib.Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
ckpts = art / "checkpoints"
ckpts.mkdir(parents=True, exist_ok=True)
last = ckpts / "last.ckpt"
start = json.loads(last.read_text())["step"] if last.exists() else 0
with open(art / "starts.txt", "a") as f:  # where each attempt began
    f.write(f"{start}\\n")
data = os.environ.get("LAUNCH_DATASTORE_DIR")
files = pathlib.Path(data).rglob("*") if data else []
seen = sorted(str(q.relative_to(data)) for q in files if q.is_file())
metrics = art / "metrics.csv"
if not metrics.exists():
    metrics.write_text("epoch,step,train_loss\\n")
for step in range(start, a.steps):
    time.sleep(a.sleep)
    tmp = ckpts / "last.tmp"
    tmp.write_text(json.dumps({"step": step + 1, "lr": a.lr}))
    tmp.replace(last)
    with open(metrics, "a") as f:
        f.write(f"0,{step + 1},{a.lr / (step + 1)}\\n")
    print(f"step {step + 1}", flush=True)
(ckpts / "best.ckpt").write_text(json.dumps({"step": a.steps, "lr": a.lr, "data": seen}))
(art / "labels.txt").write_text("archery\\nhigh_jump\\n")
if a.note is not None:
    (art / "note.txt").write_text(a.note)
print("done", flush=True)
'''


def make_project(path: Path) -> Path:
    """A working directory holding the stand-in trainer."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.py").write_text(TRAIN_SCRIPT)
    return path


def prepare(backend, workdir: Path, name: str, args=(), **fields) -> str:
    """Write a run to the backend's storage and submit it, as `launch run` does."""
    from launcher.runs import prepare_run
    from launcher.spec.jobspec import JobSpec

    fields.setdefault("instance_type", "g4dn.xlarge")
    spec = JobSpec.load(
        None,
        workdir=workdir,
        script="train.py",
        script_args=list(args),
        name=name,
        backend="aws",
        **fields,
    )
    return prepare_run(spec, backend, workdir=workdir)
