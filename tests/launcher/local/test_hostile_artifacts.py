"""Hostile scripts and unlucky users against results, through real local runs (issue 8, points
1-3): odd files in LAUNCH_ARTIFACTS_DIR, a checkpoint written in place with pauses while the
agent ships, and a pull killed with SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from localjob import NoAgents, make_spec, read_records

from launcher import runs
from launcher.backends.local import LocalBackend
from launcher.processes import process_alive
from launcher.runs.logs import read_log
from launcher.storage import records
from launcher.storage.artifacts import list_artifacts, pull_artifacts, ship_artifacts
from tests.launcher.waiting import wait_for

LONG = "x" * 236 + ".bin"  # 240 characters

ODD_FILES = textwrap.dedent(
    f"""
    import os
    from pathlib import Path

    art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
    (art / "checkpoints").mkdir(parents=True, exist_ok=True)
    (art / "a\\\\b.txt").write_text("backslash")
    (art / "t:0.log").write_text("colon")
    (art / "{LONG}").write_text("long name")
    os.mkfifo(art / "pipe")
    (art / "io-error.bin").symlink_to("/proc/self/mem")  # regular, but every read fails (EIO)
    secret = art / "secret.bin"
    secret.write_text("mode 000")
    secret.chmod(0)
    (art / "checkpoints" / "best.ckpt").write_text("best")
    (art / "labels.txt").write_text("a\\nb\\n")
    print("wrote odd files", flush=True)
    """
)


def write_script(workdir, name, text):
    (workdir / name).write_text(text)
    return name


def test_odd_files_are_skipped_and_reported_and_everything_else_ships(home, workdir, tmp_path):
    script = write_script(workdir, "odd.py", ODD_FILES)
    name = runs.prepare_run(make_spec(script=script), LocalBackend())
    row, (view,) = runs.wait_run(name, poll=0.2, timeout=60)
    storage = LocalBackend().storage()
    shipped = {a.path for a in list_artifacts(storage, name)}
    unreadable_as_me = os.geteuid() != 0  # root reads a mode-000 file; anyone else cannot
    expected = {"checkpoints/best.ckpt", "labels.txt", "t:0.log", LONG}
    assert shipped == expected | (set() if unreadable_as_me else {"secret.bin"})
    assert (row.status, view.state) == ("succeeded", "succeeded")
    # reported: in the status message and in the experiment's log
    assert "artifact file(s) not shipped: 'a\\\\b.txt' (cannot be stored" in view.message
    log = read_log(storage, name, "exp-0")
    for odd in ("'a\\\\b.txt'", "'io-error.bin': cannot be read", "'pipe': not a regular file"):
        assert f"[launch] warning: not shipped: {odd}" in log
    assert ("'secret.bin': cannot be read" in log) == unreadable_as_me
    # and what `launch predict` takes is there
    from launcher.runs.results import best_checkpoint

    assert best_checkpoint(name, dest=str(tmp_path / "pulled")).read_text() == "best"


# Attempt 1 writes a whole 1 MiB checkpoint, lets it ship, then rewrites it in place a quarter
# at a time with pauses longer than the agent's ship interval, and hangs (its node is killed).
# Attempt 2 records what the restore handed it.
IN_PLACE = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path

    art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
    ckpt = art / "checkpoints" / "last.ckpt"
    record = sys.argv[1]
    attempt = int(os.environ["LAUNCH_ATTEMPT"])

    def note(**kw):
        with open(record, "a") as f:
            f.write(json.dumps(dict(kw, attempt=attempt)) + "\\n")

    if attempt > 1:
        data = ckpt.read_bytes() if ckpt.exists() else b""
        note(event="restored", size=len(data), sha=hashlib.sha256(data).hexdigest())
        (art / "checkpoints" / "best.ckpt").write_bytes(data)
        sys.exit(0)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(b"1" * (1 << 20))
    note(event="whole")
    time.sleep(3.0)  # settles (1 s) and ships
    v2 = b"2" * (1 << 20)
    with open(ckpt, "r+b") as f:
        for i in range(4):
            f.seek(i << 18)
            f.write(v2[i << 18 : (i + 1) << 18])
            f.flush()
            note(event="quarter", i=i)
            time.sleep(0.4)
    note(event="hang")
    while True:
        time.sleep(1)
    """
)


def test_a_checkpoint_written_in_place_with_pauses_is_never_shipped_or_restored_half(
    home, workdir, tmp_path, monkeypatch
):
    monkeypatch.setenv("LAUNCH_ARTIFACT_SETTLE_S", "1.0")  # longer than the writer's pauses
    record = tmp_path / "record.jsonl"
    script = write_script(workdir, "inplace.py", IN_PLACE)
    spec = make_spec(script=script, script_args=[str(record)], retries=1)  # the kill is one
    name = runs.prepare_run(spec, LocalBackend())
    storage = LocalBackend().storage()
    whole_v1 = {"size": 1 << 20, "sha256": hashlib.sha256(b"1" * (1 << 20)).hexdigest()}
    key = records.exp_key(name, "exp-0", "artifacts.json")

    def listed():
        return storage.read_json(key, default={}).get("checkpoints/last.ckpt")

    wait_for(lambda: listed() == whole_v1, timeout=30, what="the whole first checkpoint shipped")
    seen = []

    def hanging():  # the ships during the rewrite, watched from outside
        seen.append(listed())
        return any(r["event"] == "hang" for r in read_records(record))

    wait_for(hanging, timeout=30, interval=0.05, what="the in-place rewrite")
    seen.append(listed())
    assert len(seen) > 5 and all(entry == whole_v1 for entry in seen), seen
    (node,) = [n for n in LocalBackend().nodes(name) if n.live]
    os.killpg(node.extra["pid"], signal.SIGKILL)  # the node dies mid-experiment
    wait_for(lambda: not process_alive(node.extra["pid"]), timeout=10, what="the kill")
    row, (view,) = runs.wait_run(name, poll=0.2, timeout=90)  # re-queued, resumed
    assert (row.status, view.attempt) == ("succeeded", 2), view.message
    (restored,) = [r for r in read_records(record) if r["event"] == "restored"]
    assert (restored["size"], restored["sha"]) == (whole_v1["size"], whole_v1["sha256"])


# A pull slowed down to a crawl, in its own process, so it can be killed mid-file.
SLOW_PULL = textwrap.dedent(
    """
    import sys, time
    import launcher.storage.transfer as t

    def slow(src, out, h, counter, **kw):
        size = 0
        while chunk := src.read(1 << 16):
            out.write(chunk); out.flush(); h.update(chunk); size += len(chunk)
            time.sleep(0.05)
        return size

    t._copy = slow
    from launcher.cli.app import cli
    cli(["artifacts", "pull", sys.argv[1], "--dest", sys.argv[2]], prog_name="launch")
    """
)


def shipped_run(workdir, tmp_path, files: dict[str, bytes]) -> str:
    name = runs.prepare_run(make_spec(name="pulled"), NoAgents())
    art = tmp_path / "art"
    for rel, data in files.items():
        (art / rel).parent.mkdir(parents=True, exist_ok=True)
        (art / rel).write_bytes(data)
    ship_artifacts(NoAgents().storage(), name, "exp-0", art)
    return name


def test_a_pull_killed_mid_file_leaves_part_files_the_next_pull_removes(home, workdir, tmp_path):
    big = os.urandom(8 << 20)
    name = shipped_run(workdir, tmp_path, {"checkpoints/last.ckpt": big, "labels.txt": b"a\n"})
    dest = tmp_path / "pulled"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PULL, name, str(dest)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:

        def part_growing():
            return [p for p in dest.rglob(".last.ckpt.part-*") if p.stat().st_size > 0]

        (part,) = wait_for(part_growing, timeout=30, what="the pull writing its part file")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert part.exists() and f".part-{proc.pid}-" in part.name  # what kill -9 leaves
    pulled = pull_artifacts(LocalBackend().storage(), name, dest=dest)
    exp0 = dest / name / "exp-0"
    assert (exp0 / "checkpoints" / "last.ckpt").read_bytes() == big and len(pulled) == 2
    assert [p for p in dest.rglob("*") if ".part-" in p.name] == []


def test_cli_pull_mirrors_unless_keep_extra(home, workdir, tmp_path):
    from click.testing import CliRunner

    from launcher.cli.app import cli

    name = shipped_run(workdir, tmp_path, {"checkpoints/best.ckpt": b"best"})
    extra = workdir / "launch_artifacts" / name / "exp-0" / "checkpoints" / "epoch=0.ckpt"
    extra.parent.mkdir(parents=True)
    extra.write_text("deleted by the run since")
    out = CliRunner().invoke(cli, ["artifacts", "pull", name, "--keep-extra"])
    assert out.exit_code == 0, out.output
    assert extra.exists()
    out = CliRunner().invoke(cli, ["artifacts", "pull", f"{name}/exp-0"])
    assert out.exit_code == 0, out.output
    assert not extra.exists()
    assert "removed 1 file(s) the run no longer has (--keep-extra keeps them)" in out.output
    assert (extra.parent / "best.ckpt").read_bytes() == b"best"


@pytest.mark.parametrize("when", ["periodic", "final"])
def test_a_script_deleting_its_outputs_folder_keeps_what_was_shipped(home, workdir, when):
    """Not a crash of the agent, and not a deletion of the stored results either."""
    script = write_script(workdir, "rm.py", textwrap.dedent(
        f"""
        import os, shutil, time
        from pathlib import Path
        art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
        (art / "checkpoints").mkdir(parents=True, exist_ok=True)
        (art / "checkpoints" / "best.ckpt").write_text("best")
        time.sleep(1.0)
        shutil.rmtree(art)
        time.sleep({1.0 if when == "periodic" else 0})
        """))  # fmt: skip
    name = runs.prepare_run(make_spec(script=script), LocalBackend())
    row, (view,) = runs.wait_run(name, poll=0.2, timeout=60)
    assert view.state == "succeeded", view.message
    assert {a.path for a in list_artifacts(LocalBackend().storage(), name)} == {
        "checkpoints/best.ckpt"
    }
    assert json.dumps(view.message)  # a plain message, no traceback
