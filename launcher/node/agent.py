"""What runs on a node: take experiments of one run and run them until none is left.

    python -m launcher.node.agent --root URL --run RUN --node NODE [--gpus 0,1] [--work-dir DIR]
                             [--interruption imds|file:PATH] [--max-runtime S]

The lifecycle of one experiment, each step a method below. From the claim to the finish a
heartbeat thread beats for it (node/heartbeat.py), whatever the main thread is doing:

    claim    take the next free experiment (an atomic claims/NNNNNN; see claims.py); one whose
             attempts (retries + 1) are spent fails instead
    unpack   the run's code snapshot, once per node (and its --dependency_file, into a venv)
    mount    the run's datastore, once per node
    restore  a previous attempt's artifacts, so the script resumes from its last checkpoint
    start    ``python SCRIPT ARGS`` (never a shell) in the unpacked code, in its own process
             group, killed by the kernel if this agent dies (PR_SET_PDEATHSIG; node/script.py)
    supervise  while it runs, at each beat (``check``): logs, metrics, the process tree on
             record, stop, interruption, time limit; artifacts every LAUNCH_ARTIFACT_SYNC_S, only
             files that have settled (SIGUSR1 or SIGTERM to the agent brings the next check
             forward: how the local backend makes ``launch stop`` prompt)
    ship     the last logs and every artifact (what cannot be shipped is named, not fatal)
    finish   a terminal state once (final.json: the first finisher wins), or queued again while
             retries remain or after an interruption; the script's whole tree has ended

The agent exits when nothing is left to claim, when the run is stopped, or when its node is
being interrupted (spot reclaim): then the running experiment is shipped and queued again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.config import env_float, heartbeat_interval, stale_timeout
from launcher.errors import StorageError
from launcher.node import claims as cl
from launcher.node.heartbeat import Heartbeat
from launcher.node.interruption import NoInterruption, interruption_source
from launcher.node.script import ScriptTree, set_subreaper
from launcher.processes import process_start
from launcher.storage import records
from launcher.storage.metrics_csv import latest_metrics
from launcher.storage.root import Storage


@dataclass
class Outcome:
    """How an attempt ended, as the supervision loop saw it."""

    state: str  # succeeded | failed | stopped | interrupted | lost
    exit_code: int | None
    message: str = ""


class Agent:
    """One node's worker for one run."""

    def __init__(
        self,
        storage: Storage,
        run: str,
        node: str,
        *,
        gpus: str | None = None,
        work_dir: str | Path | None = None,
        interruption=None,
        max_runtime: float | None = None,
    ):
        self.storage = storage
        self.run = run
        self.node = node
        self.gpus = gpus
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix=f"launch-{run}-{node}-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.interruption = interruption or NoInterruption()
        self.heartbeat_s = heartbeat_interval()
        self.stale_s = stale_timeout()
        self.sync_s = env_float("LAUNCH_ARTIFACT_SYNC_S", 30.0)
        self.grace_s = env_float("LAUNCH_STOP_GRACE_S", 10.0)
        self.record = storage.read_json(f"runs/{run}/run.json")
        self.spec = self.record["spec"]
        self.max_runtime = max_runtime or self.spec.get("max_runtime")
        self.experiments = {e["id"]: e for e in self.record["experiments"]}
        # attempts that may fail or die, per experiment (hand-backs on interruption are free)
        self.max_attempts = int(self.spec.get("retries") or 0) + 1
        self._code_dir: Path | None = None
        self._python: str | None = None  # the dependency file's venv, once installed
        self._data_dir: Path | None = None
        self._terminating = False  # SIGTERM to the agent: hand the experiment back, then exit
        self._poked = False  # SIGUSR1: beat now (a stop key was just written), not at the next beat

    # -- the loop ---------------------------------------------------------------------------
    def serve(self) -> int:
        """Run experiments until none is left; returns the process exit code."""
        # the handlers and the subreaper bit are undone on return: an agent served in another
        # program's process (tests, a notebook) leaves it as it was
        handlers = {signal.SIGTERM: self._on_sigterm, signal.SIGUSR1: self._on_sigusr1}
        previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        set_subreaper(True)  # what the script leaves behind comes back to us, to be ended
        try:
            self._report_node(state="running", started=time.time())
            while not self._should_exit():
                claim = self.claim()
                if claim is None:
                    break
                outcome = self.run_experiment(claim)
                if outcome.state == "interrupted":
                    break
        finally:
            with contextlib.suppress(Exception):
                self._report_node(state="exited", ended=time.time())
            set_subreaper(False)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def run_experiment(self, claim: cl.Claim) -> Outcome:
        """One attempt, start to finish, with its heartbeat beating throughout."""
        self._say(f"claimed {claim.exp} attempt {claim.attempt}")
        with Heartbeat(self.storage, claim, self.heartbeat_s) as hb:
            try:
                outcome = self._attempt(claim, hb.lost)
            except Exception as e:  # noqa: BLE001 - a bug here must not take the claim down silently
                outcome = Outcome("failed", None, f"agent error: {type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    self._log_line(claim, f"[launch] {outcome.message}")
            try:
                self.finish(claim, outcome)
            except Exception as e:  # noqa: BLE001 - storage away: the claim goes stale, is retaken
                self._say(f"could not record how {claim.exp} ended: {type(e).__name__}: {e}")
        self._say(f"{claim.exp} attempt {claim.attempt}: {outcome.state} {outcome.message}")
        return outcome

    def _attempt(self, claim: cl.Claim, lost: threading.Event) -> Outcome:
        try:
            code = self.unpack()
            data = self.mount()
            artifacts = self.restore(claim)
            tree, log_path = self.start(claim, code, data, artifacts)
        except Exception as e:  # setup failed: the attempt fails like a crashed script
            outcome = Outcome("failed", None, f"setup failed: {type(e).__name__}: {e}")
            self._log_line(claim, f"[launch] {outcome.message}")
            return outcome
        try:
            outcome = self.supervise(claim, tree, log_path, artifacts, lost)
        finally:
            tree.reap()  # children the script left behind end with the attempt
        if outcome.state != "lost":
            problem = self.ship(claim, log_path, artifacts)
            if problem:
                outcome.message = "; ".join(m for m in (outcome.message, problem) if m)
        return outcome

    # -- the steps --------------------------------------------------------------------------
    def claim(self) -> cl.Claim | None:
        for exp in self.experiments:
            if self._should_exit():
                return None
            try:
                claim = cl.try_claim(
                    self.storage,
                    self.run,
                    exp,
                    self.node,
                    stale_s=self.stale_s,
                    max_attempts=self.max_attempts,
                )
            except Exception as e:  # noqa: BLE001 - one unreadable experiment must not end the node
                self._say(f"could not claim {exp}: {type(e).__name__}: {e}")
                continue
            if claim is not None:
                return claim
        return None

    def unpack(self) -> Path:
        if self._code_dir is None:
            from launcher.storage.snapshot import unpack_snapshot

            archive = self.work_dir / "code.tar.gz"
            self.storage.download(f"runs/{self.run}/code.tar.gz", str(archive))
            self._code_dir = unpack_snapshot(archive, self.work_dir / "code")
        if self.spec.get("dependency_file") and self._python is None:
            self._python = self.install(self._code_dir / self.spec["dependency_file"])
        return self._code_dir

    def install(self, requirements: Path) -> str:
        """The run's dependency file (Grid's ``--dependency_file``), pip-installed once per node
        into a venv that sees this environment's packages; the script runs with its Python."""
        venv = self.work_dir / "venv"
        python = venv / "bin" / "python"
        self._say(f"installing {requirements.name} into {venv}")
        steps = [[sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                 [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  "-r", str(requirements)]]  # fmt: skip
        for cmd in steps[0 if not python.exists() else 1 :]:
            done = subprocess.run(cmd, cwd=requirements.parent, capture_output=True, text=True)
            if done.returncode:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"installing {requirements.name} failed (exit "
                                   f"{done.returncode}): {' / '.join(tail)}")  # fmt: skip
        return str(python)

    def mount(self) -> Path | None:
        name = self.spec.get("datastore")
        if not name:
            return None
        if self._data_dir is None:
            from launcher.storage.datastores import mount_datastore

            self._data_dir = mount_datastore(
                self.storage, name, self.spec.get("datastore_version"),
                self.spec.get("datastore_mount_dir"),
                default_dir=self.work_dir / "datastores" / name,
            )  # fmt: skip
        return self._data_dir

    def restore(self, claim: cl.Claim) -> Path:
        artifacts = self.work_dir / "artifacts" / claim.exp
        artifacts.mkdir(parents=True, exist_ok=True)
        if claim.resumed:
            from launcher.storage.artifacts import restore_artifacts

            # forgiving: files newer than their manifest are taken as stored, with a warning
            # (collected first: downloads run on threads, log pieces are numbered in order)
            warnings: list[str] = []
            restore_artifacts(self.storage, self.run, claim.exp, artifacts, warn=warnings.append)
            for msg in warnings:
                self._log_line(claim, f"[launch] warning: {msg}")
        return artifacts

    def start(
        self, claim: cl.Claim, code: Path, data: Path | None, artifacts: Path
    ) -> tuple[ScriptTree, Path]:
        exp = self.experiments[claim.exp]
        script = self.spec["script"]
        if not (code / script).is_file():
            raise FileNotFoundError(f"{script} is not in the code snapshot")
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (self.spec.get("env") or {}).items()})
        env.update(
            LAUNCH_RUN=self.run,
            LAUNCH_EXPERIMENT=claim.exp,
            LAUNCH_ATTEMPT=str(claim.attempt),
            LAUNCH_ARTIFACTS_DIR=str(artifacts),
            LAUNCH_DATASTORE_DIR=str(data or ""),
            PYTHONUNBUFFERED="1",
            # the snapshot's packages win over any installed copy: launched code is frozen
            PYTHONPATH=os.pathsep.join(p for p in (str(code), env.get("PYTHONPATH")) if p),
        )
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpus
        log_path = self.work_dir / "logs" / f"{claim.exp}-{claim.attempt:06d}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        resumed = " (resuming from the previous attempt's artifacts)" if claim.resumed else ""
        with open(log_path, "wb") as log:
            log.write(
                f"[launch] {claim.exp} attempt {claim.attempt} on {self.node}{resumed}\n".encode()
            )
            log.flush()
            python = self._python or sys.executable
            tree = ScriptTree.start([python, script, *exp["args"]], cwd=code, env=env,
                                    log=log)  # fmt: skip
        now = time.time()
        records.write_status(
            self.storage, self.run, claim.exp,
            state="running", attempt=claim.attempt, node=self.node, started=now, ended=None,
            exit_code=None, message="",
        )  # fmt: skip
        self._log_offset = 0
        self._log_seq = self._next_log_seq(claim.exp)
        return tree, log_path

    def supervise(
        self,
        claim: cl.Claim,
        tree: ScriptTree,
        log_path: Path,
        artifacts: Path,
        lost: threading.Event,
    ) -> Outcome:
        """Wait for the script, checking and shipping meanwhile; how the attempt ended. ``lost``
        is set by the heartbeat when another attempt is fenced in."""
        started = time.monotonic()
        next_beat = next_sync = 0.0
        self._metrics: dict = {}
        while True:
            code = tree.poll()
            if code is not None:
                return self._exited(claim, code)
            if lost.is_set():  # fenced: another attempt owns the experiment now
                tree.end(grace=0)
                return Outcome("lost", None)
            now = time.monotonic()
            if self._poked:
                self._poked = False
                next_beat = now
            try:
                if now >= next_beat:
                    next_beat = now + self.heartbeat_s
                    outcome = self.check(claim, tree, log_path, artifacts, now - started)
                    if outcome is not None:
                        return outcome
                if now >= next_sync:
                    next_sync = now + self.sync_s
                    self._ship_artifacts(claim, artifacts)
            except Exception as e:  # noqa: BLE001
                # A storage hiccup (S3 5xx, network) or anything the script did to its files
                # must not kill a training: try again next time. If storage stays away past the
                # stale timeout, another node takes over and fences this one.
                print(f"[agent] {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            with contextlib.suppress(subprocess.TimeoutExpired):
                tree.proc.wait(timeout=min(0.2, self.heartbeat_s))

    def check(
        self, claim: cl.Claim, tree: ScriptTree, log_path: Path, artifacts: Path, elapsed: float
    ) -> Outcome | None:
        """At each beat: logs, metrics, the tree on record, then stop/interruption/time limit."""
        tree.record(self.work_dir / "tree.json")
        self._ship_log(claim, log_path)
        metrics = latest_metrics(artifacts / "metrics.csv")
        if metrics != self._metrics:
            self._metrics = metrics
            records.write_status(self.storage, self.run, claim.exp, metrics=metrics)
        if self._stop_requested(claim.exp):
            return self._end(tree, "stopped", "stopped by the user")
        if self._terminating or self.interruption.pending():
            return self._end(tree, "interrupted", "node interrupted; queued again")
        if self.max_runtime and elapsed > float(self.max_runtime):
            return self._end(tree, "failed", f"exceeded max_runtime={self.max_runtime}s")
        return None

    def _end(self, tree: ScriptTree, state: str, message: str) -> Outcome:
        """SIGTERM to the script's tree, SIGKILL after the grace period; say which it took."""
        code, ignored = tree.end(self.grace_s)
        if ignored:
            message += f"; the script ignored SIGTERM and was killed after {self.grace_s:g}s"
        return Outcome(state, code, message)

    def _exited(self, claim: cl.Claim, code: int) -> Outcome:
        if code == 0:
            return Outcome("succeeded", 0)
        # a signal to the whole group (local stop, a node shutting down) reaches the script too
        if self._stop_requested(claim.exp):
            return Outcome("stopped", code, "stopped by the user")
        if self._terminating:
            return Outcome("interrupted", code, "agent terminated; queued again")
        return Outcome("failed", code, f"the script exited with code {code}")

    def ship(self, claim: cl.Claim, log_path: Path, artifacts: Path) -> str:
        """The last artifacts (every file as the script left it), then the last logs, with a
        warning line for each file that could not be shipped; a message if anything was not."""
        problems = []
        try:
            report = self._ship_artifacts(claim, artifacts, final=True)
        except StorageError as e:
            problems.append(f"shipping the last artifacts failed: {type(e).__name__}: {e}")
        else:
            if report.skipped:
                problems.append(report.skipped_message())
                with contextlib.suppress(OSError), open(log_path, "a") as log:
                    log.writelines(f"[launch] warning: not shipped: {rel!r}: {why}\n"
                                   for rel, why in report.skipped)  # fmt: skip
        try:
            self._ship_log(claim, log_path)
        except StorageError as e:
            problems.append(f"shipping the last logs failed: {type(e).__name__}: {e}")
        return "; ".join(problems)

    def finish(self, claim: cl.Claim, outcome: Outcome) -> None:
        """Write how the attempt ended. A terminal state is recorded once (records.finish: the
        first finisher wins, so a success is never overwritten by a taker, and a success of an
        attempt judged dead while it still worked is kept); a re-queue only while this attempt
        still holds the claim."""
        state, message = outcome.state, outcome.message
        retries = int(self.spec.get("retries") or 0)
        status = records.read_status(self.storage, self.run, claim.exp)
        interrupted = int(status.get("interruptions") or 0)  # handed back: no retry spent
        used = claim.attempt - interrupted  # attempts that failed or died, this one included
        if state == "failed" and used <= retries:
            state, message = (
                "queued",
                f"{message}; retrying ({used}/{retries} retries used)",
            )
        metrics = latest_metrics(self.work_dir / "artifacts" / claim.exp / "metrics.csv")
        fields = dict(state=state, exit_code=outcome.exit_code, attempt=claim.attempt,
                      node=self.node, ended=time.time(), message=message)  # fmt: skip
        if state == "interrupted":
            fields.update(state="queued", interruptions=interrupted + 1)
        if metrics:
            fields["metrics"] = metrics
        final = state in records.TERMINAL and (state == "succeeded" or outcome.state != "lost")
        if final and records.finish(self.storage, self.run, claim.exp, **fields):
            return
        if outcome.state == "lost" or cl.claim_lost(self.storage, claim):
            final = records.read_final(self.storage, self.run, claim.exp)
            if final and records.read_status(self.storage, self.run, claim.exp) != final:
                records.write_status(self.storage, self.run, claim.exp, **final)  # repair
            return  # a later attempt, or an earlier finish, owns the status now
        records.write_status(self.storage, self.run, claim.exp, **fields)

    # -- helpers ----------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        """A line in the node's own log (the local backend's node-N.log, the instance console)."""
        print(f"[agent {self.node}] {time.strftime('%H:%M:%S')} {message.strip()}", flush=True)

    def _should_exit(self) -> bool:
        return self._terminating or self.interruption.pending() or self._stop_requested(None)

    def _stop_requested(self, exp: str | None) -> bool:
        if self.storage.exists(f"runs/{self.run}/stop"):
            return True
        return exp is not None and self.storage.exists(records.exp_key(self.run, exp, "stop"))

    def _on_sigterm(self, signum, frame) -> None:
        self._terminating = True
        self._poked = True  # act now (stop the script, ship), not at the next beat

    def _on_sigusr1(self, signum, frame) -> None:
        self._poked = True

    def _next_log_seq(self, exp: str) -> int:
        pieces = records.log_pieces(self.storage, self.run, exp)
        return max((int(n[:-4]) for n in pieces), default=-1) + 1

    def _ship_log(self, claim: cl.Claim, log_path: Path) -> None:
        """Upload what the script printed since the last piece, as the next numbered piece."""
        try:
            with open(log_path, "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        key = records.exp_key(self.run, claim.exp, "logs", f"{self._log_seq:06d}.log")
        self.storage.write_bytes(key, data)
        self._log_offset += len(data)
        self._log_seq += 1

    def _log_line(self, claim: cl.Claim, line: str) -> None:
        seq = self._next_log_seq(claim.exp)
        key = records.exp_key(self.run, claim.exp, "logs", f"{seq:06d}.log")
        self.storage.write_bytes(key, (line + "\n").encode())

    def _ship_artifacts(self, claim: cl.Claim, artifacts: Path, *, final: bool = False):
        """Ship the artifacts folder: while the script runs, only files that are stable (unchanged
        for LAUNCH_ARTIFACT_SETTLE_S, default the sync interval up to 2 s, or renamed into
        place); the ``final`` ship takes every file. Files that cannot be shipped at all are
        told once in the node's log. Returns the ShipReport."""
        from launcher.storage.artifacts import ShipReport, ship_artifacts

        try:
            if not any(artifacts.iterdir()):
                return ShipReport()
        except OSError:  # the script removed its own outputs folder: keep what is stored
            return ShipReport()
        settle = 0.0 if final else env_float("LAUNCH_ARTIFACT_SETTLE_S", min(self.sync_s, 2.0))
        report = ship_artifacts(self.storage, self.run, claim.exp, artifacts, settle_s=settle)
        told = vars(self).setdefault("_told_not_shipped", set())
        for rel, why in report.skipped:
            if (claim.exp, claim.attempt, rel) not in told:
                told.add((claim.exp, claim.attempt, rel))
                self._say(f"{claim.exp}: not shipping {rel!r}: {why}")
        return report

    def _report_node(self, **fields) -> None:
        key = f"runs/{self.run}/nodes/{self.node}.json"
        record = self.storage.read_json(key, default=None) or {}
        record.update(fields, node=self.node, host=socket.gethostname(), pid=os.getpid(),
                      pid_start=process_start(os.getpid()))  # fmt: skip
        if self.gpus is not None:
            record["gpus"] = self.gpus
        self.storage.write_json(key, record)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m launcher.node.agent", description=__doc__.split("\n")[0]
    )
    p.add_argument("--root", required=True, help="storage root URL (file:///... or s3://...)")
    p.add_argument("--run", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--gpus", default=None, help="CUDA_VISIBLE_DEVICES for the scripts")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--interruption", default=None, help="imds or file:PATH")
    p.add_argument("--max-runtime", type=float, default=None, help="seconds per attempt")
    args = p.parse_args(argv)
    agent = Agent(
        Storage(args.root),
        args.run,
        args.node,
        gpus=args.gpus,
        work_dir=args.work_dir,
        interruption=interruption_source(args.interruption),
        max_runtime=args.max_runtime,
    )
    print(json.dumps({"agent": args.node, "run": args.run, "work_dir": str(agent.work_dir)}))
    sys.stdout.flush()
    return agent.serve()


if __name__ == "__main__":
    sys.exit(main())
