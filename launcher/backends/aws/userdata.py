"""Pure: the bash user-data that turns a fresh instance into one node of a run.

Steps, in order: schedule the hard power-off (``shutdown -h +MINUTES``) before anything else can
fail; arm a trap that powers off when the script ends, whatever the outcome (the instance's
shutdown behaviour is *terminate*, so off means gone, not billed); tell which node this is and
at which address the others reach it (IMDSv2: ``ami-launch-index`` picks its name among the
request's nodes, ``local-ipv4`` is its address unless ``aws.node_addr`` says another); fetch the
run's code snapshot from S3; install it with its pinned constraints; start
``python -m launcher.node.agent`` exactly as the local backend does, with the IMDSv2
spot-interruption watcher.

The instances of one gang request share this script, so it names all of the request's nodes
(``LAUNCH_NODES``) and each instance takes the one at its launch index. The metadata service is
``AWS_EC2_METADATA_SERVICE_ENDPOINT`` when set (botocore's setting, as the agent's watcher reads
it; the tests' fake IMDS), else ``http://169.254.169.254``.

Every value reaches the script once, in the assignment block at the top, quoted with
:func:`shlex.quote`; the rest of the script only expands those variables inside double quotes.
So a hostile run name, path or argument is data, never code.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from launcher.backends.aws.ec2 import gang_nodes
from launcher.errors import SpecError
from launcher.storage.records import check_name

DEFAULT_WORK_DIR = "/opt/launch"
# With no --max-runtime the node still powers off after this long, so nothing idles forever.
DEFAULT_HARD_LIMIT_S = 48 * 3600
# Time to boot, install and ship the last artifacts, on top of the agent's own limit.
BOOT_GRACE_S = 20 * 60

END_OF_VALUES = "# ---- end of values ----"

_BODY = r"""set -uo pipefail
# The hard limit comes first: whatever fails below, the instance powers off (and terminates).
shutdown -h "+$LAUNCH_HARD_LIMIT_MIN" || true
export AWS_DEFAULT_REGION="$LAUNCH_REGION"
mkdir -p "$LAUNCH_WORK_DIR/code"
exec > >(tee -a "$LAUNCH_WORK_DIR/bootstrap.log") 2>&1
read -r -a launch_nodes <<< "$LAUNCH_NODES"
LAUNCH_NODE=""
launch_power_off() {
    # A node that could not tell its name logs under its request's first node.
    local name="${LAUNCH_NODE:-${launch_nodes[0]}-unplaced}"
    echo "launch: node $name powering off"
    # The bootstrap's own log goes next to the node's record: why a node failed to start.
    aws s3 cp --only-show-errors "$LAUNCH_WORK_DIR/bootstrap.log" \
        "$LAUNCH_ROOT/runs/$LAUNCH_RUN/nodes/$name.boot.log" || true
    sync
    shutdown -h now
}
# Power off as soon as this script ends, success or failure: no node idles on the bill.
trap launch_power_off EXIT
launch_imds_url="${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}"
launch_imds() {  # one IMDSv2 read (a session token, then the path); fails if unreachable
    local token
    token="$(curl -sf --connect-timeout 2 --max-time 5 --retry 3 -X PUT \
        -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$launch_imds_url/latest/api/token")" \
        || return 1
    curl -sf --connect-timeout 2 --max-time 5 --retry 3 \
        -H "X-aws-ec2-metadata-token: $token" "$launch_imds_url/latest/meta-data/$1"
}
set -e
launch_index="$(launch_imds ami-launch-index)" || launch_index=""
if [ "${#launch_nodes[@]}" -eq 1 ]; then
    LAUNCH_NODE="${launch_nodes[0]}"
elif [[ "$launch_index" =~ ^[0-9]+$ ]] && [ "$launch_index" -lt "${#launch_nodes[@]}" ]; then
    LAUNCH_NODE="${launch_nodes[$launch_index]}"
else
    echo "launch: cannot tell which of $LAUNCH_NODES this instance is" \
        "(IMDS ami-launch-index: '$launch_index')"
    exit 1
fi
if [ -z "$LAUNCH_NODE_ADDR" ]; then
    LAUNCH_NODE_ADDR="$(launch_imds local-ipv4)" || LAUNCH_NODE_ADDR=""
fi
echo "launch: node $LAUNCH_NODE (ami-launch-index '$launch_index', address" \
    "'$LAUNCH_NODE_ADDR') of run $LAUNCH_RUN"
cd "$LAUNCH_WORK_DIR"
echo "launch: node $LAUNCH_NODE of run $LAUNCH_RUN: fetching code"
aws s3 cp --only-show-errors "$LAUNCH_CODE_URL" "$LAUNCH_WORK_DIR/code.tar.gz"
tar -xzf "$LAUNCH_WORK_DIR/code.tar.gz" -C "$LAUNCH_WORK_DIR/code"
echo "launch: installing the snapshot"
python3 -m venv --system-site-packages "$LAUNCH_WORK_DIR/venv" || {
    apt-get install -y -q python3-venv
    python3 -m venv --system-site-packages "$LAUNCH_WORK_DIR/venv"
}
if [ -f "$LAUNCH_WORK_DIR/code/constraints.txt" ]; then
    "$LAUNCH_WORK_DIR/venv/bin/python" -m pip install -q \
        -c "$LAUNCH_WORK_DIR/code/constraints.txt" "$LAUNCH_WORK_DIR/code[all]"
else
    "$LAUNCH_WORK_DIR/venv/bin/python" -m pip install -q "$LAUNCH_WORK_DIR/code[all]"
fi
echo "launch: starting the agent"
"$LAUNCH_WORK_DIR/venv/bin/python" -m launcher.node.agent \
    --root "$LAUNCH_ROOT" --run "$LAUNCH_RUN" --node "$LAUNCH_NODE" \
    --work-dir "$LAUNCH_WORK_DIR/agent" --interruption imds \
    ${LAUNCH_NODE_ADDR:+--addr "$LAUNCH_NODE_ADDR"} \
    ${LAUNCH_MAX_RUNTIME:+--max-runtime "$LAUNCH_MAX_RUNTIME"}
"""


@dataclass(frozen=True)
class UserDataValues:
    """Every value the script uses. Validated where a shape is known; quoted regardless."""

    root_url: str  # s3://BUCKET/PREFIX
    run: str
    node: str  # the first node of the request
    region: str
    max_runtime: int | None = None  # seconds per attempt, the agent's --max-runtime
    attempts: int = 1  # the most attempts one node may run (experiments x tries)
    work_dir: str = DEFAULT_WORK_DIR
    count: int = 1  # nodes in the request (a gang's MinCount=MaxCount); they follow ``node``
    node_addr: str | None = None  # aws.node_addr; None: each node's IMDS local-ipv4

    @property
    def nodes(self) -> list[str]:
        return gang_nodes(self.node, self.count)

    @property
    def code_url(self) -> str:
        return f"{self.root_url}/runs/{self.run}/code.tar.gz"

    def hard_limit_minutes(self) -> int:
        """Minutes until the unconditional power-off: every attempt this node could run at its
        time limit, plus boot grace; a default ceiling when attempts have no limit."""
        if self.max_runtime is None:
            limit = DEFAULT_HARD_LIMIT_S
        else:
            limit = self.max_runtime * max(1, self.attempts)
        return max(1, math.ceil((limit + BOOT_GRACE_S) / 60))


def _validate(v: UserDataValues) -> None:
    check_name(v.run, "run name")
    check_name(v.node, "node name")
    if isinstance(v.count, bool) or not isinstance(v.count, int) or v.count < 1:
        raise SpecError(f"a request launches at least one node, not {v.count!r}")
    v.nodes  # noqa: B018 - a gang's first node must be numbered
    if not v.root_url.startswith("s3://"):
        raise SpecError(f"the aws backend's root must be s3://..., not {v.root_url!r}")
    if v.max_runtime is not None and (isinstance(v.max_runtime, bool) or v.max_runtime <= 0):
        raise SpecError(f"max_runtime must be a positive number of seconds, not {v.max_runtime}")


def assignments(v: UserDataValues) -> str:
    """The script's only lines that carry values: ``NAME=<shlex-quoted value>``."""
    values = {
        "LAUNCH_ROOT": v.root_url,
        "LAUNCH_RUN": v.run,
        "LAUNCH_NODES": " ".join(v.nodes),  # names are checked: no spaces, no quotes
        "LAUNCH_NODE_ADDR": v.node_addr or "",
        "LAUNCH_REGION": v.region,
        "LAUNCH_CODE_URL": v.code_url,
        "LAUNCH_WORK_DIR": v.work_dir,
        "LAUNCH_MAX_RUNTIME": "" if v.max_runtime is None else str(int(v.max_runtime)),
        "LAUNCH_HARD_LIMIT_MIN": str(v.hard_limit_minutes()),
    }
    return "\n".join(f"{name}={shlex.quote(value)}" for name, value in values.items())


def build_user_data(v: UserDataValues) -> str:
    """The whole user-data script for one node."""
    _validate(v)
    header = (
        "#!/bin/bash\n"
        "# A launch node's bootstrap, generated by launcher/backends/aws/userdata.py.\n"
        "# Values are shell-quoted below and only ever expanded inside double quotes.\n"
    )
    return f"{header}{assignments(v)}\n{END_OF_VALUES}\n{_BODY}"
