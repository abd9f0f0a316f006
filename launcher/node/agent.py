"""What runs on a node: take experiments of one run and run them until none is left.

    python -m launcher.node.agent --root URL --run RUN --node NODE [--gpus 0,1] [--work-dir DIR]
                             [--interruption imds|file:PATH] [--max-runtime S]
                             [--addr ADDR] [--group GROUP]

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

A multi-node experiment (spec ``nodes`` > 1) is one attempt run by a gang (node/gang.py): the
claimer is rank 0, forms the gang and records the outcome; ranks 1..N-1 take seats, run the same
script with the gang's variables (MASTER_ADDR, NODE_RANK, ...), ship only their logs
(``logs/rank-K/``), and say how they ended. If any rank fails, stops or loses its node, every
rank stops and the experiment is retried (or handed back) as one unit. An agent of such a run
waits, polling, while an experiment is still queued (a gang may need it), rather than exiting.
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
from launcher.node import gang as gangs
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

    # succeeded | failed | stopped | interrupted (this node goes away) | lost (fenced) |
    # released (handed back, free, and this agent goes on: a gang that did not form)
    state: str
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
        addr: str | None = None,
        group: str | None = None,
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
        self.size = int(self.spec.get("nodes") or 1)  # nodes per experiment
        # where the other ranks reach this node (a setting: an interface, or a mapped address)
        self.addr = addr or os.environ.get("LAUNCH_NODE_ADDR") or gangs.primary_address()
        self.group = group  # gangs form only among agents of one group (a Slurm allocation)
        self.form_s = env_float("LAUNCH_GANG_FORM_S", 300.0)  # seats to fill, then hand back
        # how often a forming gang looks at its seats (and an idle agent for work): quick on a
        # file system, gentler on S3, where each look is a LIST and a few GETs
        self.poll_s = env_float("LAUNCH_GANG_POLL_S", 0.2 if storage.protocol == "file" else 1.0)
        self._seated: cl.Claim | None = None  # a seat taken while giving way (see _gather)
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
                claim = self.claim() if self.size == 1 else self.sit_or_claim()
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
        role = f" as rank {claim.rank}" if claim.rank else ""
        verb = "took" if claim.rank else "claimed"
        self._say(f"{verb} {claim.exp} attempt {claim.attempt}{role}")
        with Heartbeat(self.storage, claim, self.heartbeat_s) as hb:
            try:
                outcome = self._gather(claim, hb.lost) if self.size > 1 else None
                if outcome is None:
                    outcome = self._attempt(claim, hb.lost)
            except Exception as e:  # noqa: BLE001 - a bug here must not take the claim down silently
                outcome = Outcome("failed", None, f"agent error: {type(e).__name__}: {e}")
                with contextlib.suppress(Exception):
                    self._log_line(claim, f"[launch] {outcome.message}")
            try:
                if claim.rank:
                    self.finish_rank(claim, outcome)
                else:
                    self.finish(claim, outcome)
            except Exception as e:  # noqa: BLE001 - storage away: the claim goes stale, is retaken
                self._say(f"could not record how {claim.exp} ended: {type(e).__name__}: {e}")
        self._say(f"{claim.exp} attempt {claim.attempt}{role}: {outcome.state} {outcome.message}")
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
            if claim.gang is not None and not claim.rank:  # the other ranks stop at once
                claim.gang.abort(0, "failed", outcome.message)
            return outcome
        try:
            outcome = self.supervise(claim, tree, log_path, artifacts, lost)
            if claim.gang is not None and claim.rank == 0:
                outcome = self._gang_outcome(claim, outcome)
        finally:
            tree.reap()  # children the script left behind end with the attempt
        if outcome.state != "lost" or claim.rank:
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

    def sit_or_claim(self) -> cl.Claim | None:
        """Work in a multi-node run: a seat in a gang that is forming, else a claim (rank 0 of
        a new gang). With neither, wait while an experiment is still queued (its gang may need
        this node), up to the time a gang takes to form twice; None when nothing is left. Nothing
        queued must hold for two heartbeats first: a node started to replace a gang's dead rank
        may come up before rank 0 has noticed and handed the experiment back."""
        idle_since = quiet_since = time.monotonic()
        seated, self._seated = self._seated, None
        if seated is not None:
            return seated
        while not self._should_exit():
            seat = self.sit()
            if seat is not None:
                return seat
            claim = self.claim()
            if claim is not None:
                return claim
            waiting = records.read_statuses(self.storage, self.run, list(self.experiments))
            now = time.monotonic()
            if any(st["state"] == "queued" for st in waiting.values()):
                quiet_since = now
            elif now - quiet_since > 2 * self.heartbeat_s:
                return None
            if now - idle_since > 2 * self.form_s:
                self._say("nothing to do for a while; leaving")
                return None
            time.sleep(self.poll_s)
        return None

    def sit(self, below: int | None = None) -> cl.Claim | None:
        """A seat in a forming gang of this agent's group (lowest experiment first; with
        ``below``, only in a gang of a lower experiment than that)."""
        for entry in gangs.forming(self.storage, self.run, self.group):
            if below is not None and gangs.exp_index(entry["exp"]) >= below:
                break
            gang = gangs.Gang(self.storage, self.run, entry["exp"], int(entry["attempt"]),
                              int(entry["size"]))  # fmt: skip
            if gang.released():
                continue
            for rank in range(1, gang.size):
                if gang.sit(rank, self.node, self.addr, self.group):
                    return cl.Claim(run=self.run, exp=gang.exp, attempt=gang.attempt,
                                    node=self.node, resumed=bool(entry.get("resumed")),
                                    rank=rank, gang=gang)  # fmt: skip
        return None

    def _gather(self, claim: cl.Claim, lost: threading.Event) -> Outcome | None:
        """Bring the gang together: rank 0 fills the seats and publishes where to meet; rank K
        waits for that. None when every rank is in; how the attempt ended otherwise."""
        if claim.rank:
            return self._await_cluster(claim, lost)
        gang = claim.gang = gangs.Gang(self.storage, self.run, claim.exp, claim.attempt, self.size)
        gang.sit(0, self.node, self.addr, self.group)
        gangs.open_lobby(self.storage, gang, self.group, claim.resumed)
        started = time.monotonic()
        try:
            while True:
                if lost.is_set():
                    return Outcome("lost", None)
                if self._should_exit() or self._stop_requested(claim.exp):
                    gang.release("rank 0 is going away")
                    if self._stop_requested(claim.exp):
                        return Outcome("stopped", None, "stopped by the user")
                    return Outcome("interrupted", None, "node interrupted as its gang formed")
                word = gang.aborted()  # a seated node left before the start: begin afresh
                if word is not None:
                    why = f"rank {word.get('rank')} left before the start ({word.get('why')})"
                    gang.release(why)
                    return Outcome("released", None, why)
                seats = gang.seats()
                if len(seats) >= self.size and all(seats[r].get("addr") for r in seats):
                    ranks = [seats[r] for r in range(self.size)]
                    gang.publish(gangs.Cluster(
                        addrs=[s["addr"] for s in ranks], nodes=[s["node"] for s in ranks],
                        port=gangs.free_port(self.addr), gpus_per_node=self._gpu_count(),
                        resumed=claim.resumed,
                    ))  # fmt: skip
                    self._say(f"{claim.exp}: gang of {self.size} formed in "
                              f"{time.monotonic() - started:.2f}s")  # fmt: skip
                    return None
                waited = time.monotonic() - started
                # all claimed at once: fill the lowest gang first rather than wait for each other
                lower = self.sit(below=gangs.exp_index(claim.exp))
                if lower is not None:
                    self._seated = lower  # this agent's next attempt
                    gang.release(f"gave way to {lower.exp}'s gang")
                    return Outcome("released", None, f"gave way to {lower.exp}'s forming gang")
                if waited > self.form_s:
                    why = (f"only {len(seats)} of {self.size} nodes joined in {self.form_s:g}s "
                           "(LAUNCH_GANG_FORM_S); handed back")  # fmt: skip
                    gang.release(why)
                    return Outcome("released", None, why)
                time.sleep(self.poll_s)
        finally:
            with contextlib.suppress(Exception):
                gangs.close_lobby(self.storage, gang)

    def _await_cluster(self, claim: cl.Claim, lost: threading.Event) -> Outcome | None:
        gang = claim.gang
        deadline = time.monotonic() + self.form_s + self.stale_s
        while not lost.is_set():
            if gang.cluster() is not None:
                return None
            if self._should_exit():  # this node goes away before the gang started: say so
                stopped = self._stop_requested(claim.exp)
                gang.abort(claim.rank, "stopped" if stopped else "interrupted",
                           f"{self.node} went away before the gang started")  # fmt: skip
                return Outcome("lost", None, "left before the gang started")
            if time.monotonic() > deadline:
                why = f"rank 0 did not say where to meet within {self.form_s + self.stale_s:g}s"
                gang.abort(claim.rank, "failed", why)
                return Outcome("failed", None, why)
            time.sleep(self.poll_s)
        return Outcome("lost", None, self._why_lost(claim))

    def _gpu_count(self) -> int:
        """GPUs each of this node's ranks' script gets (the gang's LAUNCH_GPUS_PER_NODE)."""
        if self.gpus is None:
            return int(self.spec.get("gpus") or 0)
        return len([g for g in self.gpus.split(",") if g.strip()])

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
        cluster = claim.gang.cluster() if claim.gang is not None else None
        if cluster is not None:
            env.update(cluster.env(claim.rank))
        else:
            env.update(gangs.node_env(0, 1, [self.addr], self._gpu_count()))
        log_path = self.work_dir / "logs" / f"{claim.exp}-{claim.attempt:06d}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        resumed = " (resuming from the previous attempt's artifacts)" if claim.resumed else ""
        where = self.node
        if cluster is not None:
            where += (f", rank {claim.rank} of {cluster.size} (MASTER_ADDR={cluster.addrs[0]} "
                      f"MASTER_PORT={cluster.port})")  # fmt: skip
        with open(log_path, "wb") as log:
            head = f"[launch] {claim.exp} attempt {claim.attempt} on {where}{resumed}\n"
            log.write(head.encode())
            log.flush()
            python = self._python or sys.executable
            tree = ScriptTree.start([python, script, *exp["args"]], cwd=code, env=env,
                                    log=log)  # fmt: skip
        now = time.time()
        if claim.rank:
            claim.gang.beat(claim.rank, self.node, started=now)
        else:
            gang = {"nodes": cluster.nodes} if cluster is not None else {}
            records.write_status(
                self.storage, self.run, claim.exp,
                state="running", attempt=claim.attempt, node=self.node, started=now, ended=None,
                exit_code=None, message="", **gang,
            )  # fmt: skip
        self._log_offset = 0
        self._log_seq = self._next_log_seq(claim)
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
                if not claim.rank:
                    tree.end(grace=0)
                    return Outcome("lost", None)
                # the gang's attempt is over: end gracefully, as rank 0 does (a stop or an
                # interruption lets every rank's trainer take part in saving last.ckpt)
                return self._end(tree, "lost", self._why_lost(claim))
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
        """At each beat: logs, metrics, the tree on record, then stop/interruption/time limit;
        in a gang, rank 0 also looks at the other ranks (see _check_ranks)."""
        tree.record(self.work_dir / "tree.json")
        self._ship_log(claim, log_path)
        if not claim.rank:
            metrics = latest_metrics(artifacts / "metrics.csv")
            if metrics != self._metrics:
                self._metrics = metrics
                records.write_status(self.storage, self.run, claim.exp, metrics=metrics)
        if self._stop_requested(claim.exp):
            return self._end(tree, "stopped", "stopped by the user")
        if self._terminating or self.interruption.pending():
            return self._end(tree, "interrupted", "node interrupted; queued again")
        if claim.rank:
            return None  # rank 0 keeps the time limit and watches the ranks
        if self.max_runtime and elapsed > float(self.max_runtime):
            return self._end(tree, "failed", f"exceeded max_runtime={self.max_runtime}s")
        if claim.gang is not None:
            return self._check_ranks(claim, tree)
        return None

    def _check_ranks(self, claim: cl.Claim, tree: ScriptTree) -> Outcome | None:
        """Rank 0's look at the gang: another rank aborted (failed, stopped, interrupted), or
        its node went away (its beat is stale, or it was a process here that is gone): every
        rank stops, and the attempt ends as one."""
        gang, cluster = claim.gang, claim.gang.cluster()
        word = gang.aborted()
        if word is not None and word.get("rank") != 0:
            return self._end(tree, *self._abort_outcome(word))
        beats, now = gang.beats(), time.time()
        for rank in range(1, cluster.size):
            node = cluster.nodes[rank]
            seen = float((beats.get(rank) or {}).get("time") or cluster.formed or now)
            if now - seen > self.stale_s or cl.node_is_dead(self.storage, self.run, node):
                why = f"rank {rank}'s node {node} went away"
                gang.abort(0, "failed", why)
                return self._end(tree, "failed", f"{why}; every rank was stopped")
        return None

    @staticmethod
    def _abort_outcome(word: dict) -> tuple[str, str]:
        """How rank 0 records an attempt another rank ended: (state, message)."""
        who = f"rank {word.get('rank')}" if word.get("rank") is not None else "a rank"
        message = f"{who}: {word.get('why')}; every rank was stopped"
        kind = word.get("kind")
        if kind == "interrupted":  # that node goes away: the gang is handed back, free
            return "released", f"{message} and the experiment queued again"
        return ("stopped" if kind == "stopped" else "failed"), message

    def _gang_outcome(self, claim: cl.Claim, outcome: Outcome) -> Outcome:
        """Rank 0's script has ended: tell the other ranks, and judge the attempt as a whole.
        A success needs every rank's script to succeed (they are given the time a heartbeat
        takes to go stale to say so); a failure elsewhere is named as the cause."""
        gang = claim.gang
        if outcome.state != "succeeded":
            word = gang.aborted()
            if word is not None and word.get("rank") != 0 and outcome.state == "failed":
                state, message = self._abort_outcome(word)  # the cause, not its echo here
                return Outcome(state, outcome.exit_code, message)
            kind = "failed" if outcome.state in ("failed", "lost") else outcome.state
            gang.abort(0, kind, outcome.message or outcome.state)
            return outcome
        deadline = time.monotonic() + self.stale_s
        while time.monotonic() < deadline:
            exits = gang.exits()
            bad = {r: c for r, c in exits.items() if c != 0}
            if bad:
                rank, code = min(bad.items())
                return Outcome("failed", code, f"rank {rank}'s script exited with code {code}")
            if len(exits) == claim.gang.size - 1:
                gang.abort(0, "done", "every rank succeeded")
                return outcome
            word = gang.aborted()
            if word is not None and word.get("rank") != 0:
                state, message = self._abort_outcome(word)
                return Outcome(state, None, message)
            time.sleep(self.poll_s)
        gang.abort(0, "done", "rank 0 succeeded; the ranks still running were stopped")
        return outcome

    def _why_lost(self, claim: cl.Claim) -> str:
        word = claim.gang.aborted() if claim.gang is not None else None
        if word is not None:
            return f"the gang's attempt ended (rank {word.get('rank')}: {word.get('why')})"
        if claim.gang is not None and claim.gang.released():
            return "the gang was released"
        if claim.gang is not None:  # rank 0 died: its lobby entry (if it still formed) goes too
            with contextlib.suppress(Exception):
                gangs.close_lobby(self.storage, claim.gang)
        return "rank 0's claim went away"

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
        if code in (-signal.SIGTERM, 128 + signal.SIGTERM) and not self._terminating:
            # a scheduler that signals the whole job (Slurm's requeue, a node shutting down)
            # may reach the script a moment before this agent's own handler has run
            deadline = time.monotonic() + env_float("LAUNCH_SIGTERM_RACE_S", 1.0)
            while not self._terminating and time.monotonic() < deadline:
                time.sleep(0.02)
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
        if state in ("interrupted", "released"):  # handed back: no retry spent
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
        if status["state"] in records.TERMINAL:  # stopped meanwhile: a re-queue must not undo it
            return
        records.write_status(self.storage, self.run, claim.exp, **fields)

    def finish_rank(self, claim: cl.Claim, outcome: Outcome) -> None:
        """Rank K's end: its exit code for rank 0, and, if it failed, stopped or lost its node,
        the word that ends the attempt on every rank. Rank 0 records the experiment's state."""
        gang = claim.gang
        if outcome.state == "lost":
            return  # the attempt was already over for this rank
        gang.report_exit(claim.rank, outcome.exit_code)
        if outcome.state == "interrupted":
            gang.abort(claim.rank, "interrupted", f"node {self.node} was interrupted")
        elif outcome.state == "stopped":
            gang.abort(claim.rank, "stopped", "stopped by the user")
        elif outcome.state != "succeeded":
            gang.abort(claim.rank, "failed", f"{outcome.message or outcome.state} on {self.node}")

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

    def _next_log_seq(self, claim: cl.Claim) -> int:
        pieces = records.log_pieces(self.storage, self.run, claim.exp, claim.rank)
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
        key = records.log_key(self.run, claim.exp, self._log_seq, claim.rank)
        self.storage.write_bytes(key, data)
        self._log_offset += len(data)
        self._log_seq += 1

    def _log_line(self, claim: cl.Claim, line: str) -> None:
        seq = self._next_log_seq(claim)
        key = records.log_key(self.run, claim.exp, seq, claim.rank)
        self.storage.write_bytes(key, (line + "\n").encode())

    def _ship_artifacts(self, claim: cl.Claim, artifacts: Path, *, final: bool = False):
        """Ship the artifacts folder: while the script runs, only files that are stable (unchanged
        for LAUNCH_ARTIFACT_SETTLE_S, default the sync interval up to 2 s, or renamed into
        place); the ``final`` ship takes every file. Files that cannot be shipped at all are
        told once in the node's log. Returns the ShipReport."""
        from launcher.storage.artifacts import ShipReport, ship_artifacts

        if claim.rank:  # only rank 0's outputs are the experiment's (Lightning saves there)
            return ShipReport()
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
    p.add_argument("--addr", default=None,
                   help="the address other ranks reach this node at (default: $LAUNCH_NODE_ADDR, "
                   "else the default route's)")  # fmt: skip
    p.add_argument("--group", default=None, help="form gangs only with agents of this group")
    args = p.parse_args(argv)
    agent = Agent(
        Storage(args.root),
        args.run,
        args.node,
        gpus=args.gpus,
        work_dir=args.work_dir,
        interruption=interruption_source(args.interruption),
        max_runtime=args.max_runtime,
        addr=args.addr,
        group=args.group,
    )
    print(json.dumps({"agent": args.node, "run": args.run, "work_dir": str(agent.work_dir)}))
    sys.stdout.flush()
    return agent.serve()


if __name__ == "__main__":
    sys.exit(main())
