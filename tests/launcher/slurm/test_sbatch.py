"""The slurm backend's pure parts, no cluster needed: sbatch's flags and the batch script of a
multi-node run, and how a gang's node names map back to their task."""

from __future__ import annotations

from launcher.backends.slurm import _gone
from launcher.backends.slurm.config import SlurmSettings
from launcher.backends.slurm.queue import Task, node_names
from launcher.backends.slurm.sbatch import BatchValues, batch_script, sbatch_argv

SETTINGS = SlurmSettings(root_url="file:///shared/root")


def test_a_multi_node_task_asks_for_its_nodes_with_per_node_gpus_cpus_and_memory():
    spec = {"nodes": 2, "gpus": 4, "cpus": 8, "memory": 32, "max_runtime": 3600}
    argv = sbatch_argv("r", spec, 3, SETTINGS, "/logs/%A_%a.out")
    assert "--array=0-2%3" in argv
    assert "--nodes=2" in argv and "--ntasks-per-node=1" in argv and "--ntasks=1" not in argv
    # --gres, --cpus-per-task and --mem are per node: each node gets what --gpus etc. ask
    assert {"--gres=gpu:4", "--cpus-per-task=8", "--mem=32768M", "--time=65"} <= set(argv)


def test_a_one_node_task_stays_one_task():
    argv = sbatch_argv("r", {"gpus": 1}, 2, SETTINGS, "/logs/%A_%a.out")
    assert "--nodes=1" in argv and "--ntasks=1" in argv and "--gres=gpu:1" in argv


def test_the_gang_script_runs_an_agent_per_node_through_srun_without_slurm_variables():
    script = batch_script(BatchValues(run="r", root_url="file:///x", python="/py", nodes=2,
                                      gpus=4))  # fmt: skip
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--nodes=2" in srun and "--ntasks-per-node=1" in srun and "--kill-on-bad-exit=1" in srun
    assert "--gres=gpu:4" in srun
    assert (
        '--group "$group" --addr "$addr"' in script and 'node="$LAUNCH_SLURM_NODE_BASE-n' in script
    )
    # read before the scrub, which happens in each node's command, before its agent
    body = script.split("<<'RANK'")[1]
    assert body.index("$SLURMD_NODENAME") < body.index("unset") < body.index("launcher.node.agent")
    assert "scancel --signal=TERM" in script  # the time-limit warning, not a SIGTERM to srun
    one = batch_script(BatchValues(run="r", root_url="file:///x", python="/py"))
    assert "srun" not in one and "--group" not in one


def test_a_gangs_node_names_map_back_to_its_task_life():
    assert node_names("j7-0-r1", 1) == ["j7-0-r1"]
    assert node_names("j7-0-r1", 2) == ["j7-0-r1-n0", "j7-0-r1-n1"]
    running = {"exp-0": {"state": "running", "node": "j7-0-r1-n1"}}
    assert _gone(running, [Task("7", 0, "RUNNING", restarts=1)], {"7"}) == {}
    # requeued: judged once the next life runs (until then the old one may be handing back)
    assert _gone(running, [Task("7", 0, "PENDING", restarts=2)], {"7"}) == {}
    requeued = _gone(running, [Task("7", 0, "RUNNING", restarts=2)], {"7"})
    assert requeued == {"j7-0-r1-n1": "Slurm requeued task 7_0"}
    ended = _gone(running, [Task("7", 0, "FAILED", restarts=1)], {"7"})
    assert ended == {"j7-0-r1-n1": "Slurm task 7_0 ended FAILED"}
