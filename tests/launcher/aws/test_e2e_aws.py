"""End to end with the real CLI, the real aws CLI and the real user-data, against moto.

`launch datastore create` uploads to S3; `launch run --backend aws --max-nodes 2` launches two
instances (checked with `aws ec2 describe-instances`); each instance's user-data is played by
bash (moto runs none), which fetches the code with the aws CLI and starts the agent; the agents
finish both experiments; `launch artifacts pull` brings them back verified; every instance ends
terminated.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.launcher.aws.conftest import BUCKET
from tests.launcher.aws.helpers import calls_log, launch_cli, make_project, start_instance

pytestmark = pytest.mark.aws  # ~15 s


def launch(*args: str, cwd: Path) -> str:
    proc = launch_cli(*args, cwd=cwd)
    assert proc.returncode == 0, f"launch {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def aws_cli(*args: str) -> dict:
    proc = subprocess.run(
        ["aws", *args, "--output", "json"], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(proc.stdout)


def test_sweep_on_two_instances(aws, tmp_path):
    project = make_project(tmp_path / "project")
    clips = tmp_path / "clips"
    for label in ("archery", "high_jump"):
        (clips / label).mkdir(parents=True)
        for i in range(3):
            (clips / label / f"{i}.mp4").write_bytes(os.urandom(2048))
    assert launch("datastore", "create", "--name", "clips", "--source", str(clips),
                  "--backend", "aws", cwd=project).strip() == "clips:1"  # fmt: skip

    run = launch("run", "--backend", "aws", "--instance", "g4dn.xlarge", "--max-nodes", "2",
                 "--disk-size", "80", "--datastore", "clips", "--max-runtime", "600",
                 "--name", "e2e", "train.py", "--steps", "4", "--lr", "[0.1, 0.01]",
                 cwd=project).strip()  # fmt: skip
    assert run == "e2e"

    desc = aws_cli("ec2", "describe-instances", "--filters", "Name=tag:launch:run,Values=e2e")
    found = [i for r in desc["Reservations"] for i in r["Instances"]]
    assert len(found) == 2
    volumes = aws_cli("ec2", "describe-volumes")["Volumes"]
    for inst in found:
        assert inst["InstanceType"] == "g4dn.xlarge"
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags["launch:run"] == "e2e" and tags["launch:node"] in ("node-0", "node-1")
        assert tags["launch:owner"] == "arn:aws:sts::123456789012:user/moto"
        vol_id = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        (vol,) = [v for v in volumes if v["VolumeId"] == vol_id]
        assert (vol["Size"], vol["VolumeType"], vol["Encrypted"]) == (80, "gp3", True)
        (group,) = aws_cli("ec2", "describe-security-groups", "--group-ids",
                           inst["SecurityGroups"][0]["GroupId"])["SecurityGroups"]  # fmt: skip
        # one inbound rule: everything, from members of the group itself (a gang's ranks)
        assert [
            (p["IpProtocol"], [g["GroupId"] for g in p["UserIdGroupPairs"]], p["IpRanges"],
             p["Ipv6Ranges"], p["PrefixListIds"]) for p in group["IpPermissions"]
        ] == [("-1", [group["GroupId"]], [], [], [])]  # fmt: skip

    nodes = {
        {t["Key"]: t["Value"] for t in i["Tags"]}["launch:node"]: i["InstanceId"] for i in found
    }
    procs = {n: start_instance(iid, tmp_path / n) for n, iid in sorted(nodes.items())}
    for n, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{n}:\n{out}"
        calls = calls_log(tmp_path / n).read_text().splitlines()
        # the hard limit was scheduled first, the package installed, the power-off came last
        assert calls[0] == f"shutdown -h +{(600 * 2 + 20 * 60) // 60}"
        assert f"pip -m pip install -q {tmp_path / n}/code[all]" in calls
        assert calls[-1] == "shutdown -h now"
        boot = (
            boto3.client("s3")
            .get_object(Bucket=BUCKET, Key=f"launch/runs/e2e/nodes/{n}.boot.log")["Body"]
            .read()
            .decode()
        )
        assert "launch: starting the agent" in boot and f"node {n} powering off" in boot

    detail = json.loads(launch("status", "e2e", "--json", cwd=project))
    text = json.dumps(detail)
    assert text.count('"succeeded"') >= 2, text

    dest = tmp_path / "pulled"
    launch("artifacts", "pull", "e2e", "--dest", str(dest), cwd=project)
    for exp, lr in (("exp-0", 0.1), ("exp-1", 0.01)):
        best = json.loads((dest / "e2e" / exp / "checkpoints" / "best.ckpt").read_text())
        assert best["step"] == 4 and best["lr"] == lr
        # the agent mounted the datastore from S3 on the node's disk
        assert best["data"] == sorted(f"{c}/{i}.mp4" for c in ("archery", "high_jump")
                                      for i in range(3))  # fmt: skip
        assert (dest / "e2e" / exp / "labels.txt").read_text().split() == ["archery", "high_jump"]
        assert len((dest / "e2e" / exp / "metrics.csv").read_text().splitlines()) == 5

    states = aws_cli("ec2", "describe-instances", "--filters", "Name=tag:launch:run,Values=e2e")
    assert {i["State"]["Name"] for r in states["Reservations"] for i in r["Instances"]} <= {
        "shutting-down",
        "terminated",
    }


@pytest.mark.slow
def test_real_trainer_on_a_node_then_predict_locally(aws, tmp_path):
    """The real trainer, with its data mounted from an S3 datastore on the (played) node, then
    `launch predict` on the pulled best checkpoint."""
    import shutil

    from trainer.sample_data import make_motion_dataset

    repo = Path(__file__).resolve().parents[3]
    project = tmp_path / "project"
    shutil.copytree(repo / "trainer", project / "trainer",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    classes = ("left", "right", "up")
    data = make_motion_dataset(tmp_path / "motion", videos_per_class=3, num_frames=16,
                               size=(32, 32), classes=classes)  # fmt: skip
    launch("datastore", "create", "--name", "motion", "--source", str(data), "--backend", "aws",
           cwd=project)  # fmt: skip
    tiny = ["--backbone", "demo_cnn", "--crop_size", "32", "--num_frames", "8",
            "--sampling_rate", "4", "--batch_size", "3", "--num_workers", "0", "--no_hflip",
            "--clips_per_video", "1", "--max_epochs", "1"]  # fmt: skip
    launch("run", "--backend", "aws", "--name", "real", "--datastore", "motion", "--gpus", "0",
           "trainer/train.py", *tiny, cwd=project)  # fmt: skip
    desc = aws_cli("ec2", "describe-instances", "--filters", "Name=tag:launch:run,Values=real")
    (inst,) = [i for r in desc["Reservations"] for i in r["Instances"]]
    proc = start_instance(inst["InstanceId"], tmp_path / "node-0")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert '"succeeded"' in launch("status", "real", "--json", cwd=project)

    video = next((data / "val" / "left").glob("*.mp4"))
    predicted = json.loads(launch("predict", "real", str(video), "--json", cwd=project))
    assert (project / "launch_artifacts" / "real" / "exp-0" / "checkpoints" / "best.ckpt").is_file()
    # one epoch on 9 clips need not be right, but the label must be one the data has
    (label,) = predicted["predictions"].values()
    assert (label if isinstance(label, str) else label[0]) in classes, predicted


def test_failed_bootstrap_still_powers_off(aws, tmp_path):
    """The code cannot be fetched: the script fails early, yet the node powers off (so it
    terminates) and its bootstrap log, with the failure, lands next to its record."""
    from launcher.backends.aws import AwsBackend
    from tests.launcher.aws.helpers import play_instance, prepare

    backend = AwsBackend(profile_wait_s=0)
    run = prepare(backend, make_project(tmp_path / "p"), "nocode")
    backend.storage().delete(f"runs/{run}/code.tar.gz")
    (node,) = backend.nodes(run)
    code, out = play_instance(node.extra["instance_id"], tmp_path / "node-0")
    assert code != 0, out
    calls = calls_log(tmp_path / "node-0").read_text().splitlines()
    assert calls[0].startswith("shutdown -h +") and calls[-1] == "shutdown -h now"
    assert not any(c.startswith("pip") for c in calls)  # it stopped at the first failure
    state = boto3.client("ec2").describe_instances(InstanceIds=[node.extra["instance_id"]])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in ("shutting-down",
                                                                         "terminated")  # fmt: skip
    boot = backend.storage().read_text(f"runs/{run}/nodes/node-0.boot.log")
    assert "fetching code" in boot and "powering off" in boot
