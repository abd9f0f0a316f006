"""Pure: the bash user-data that turns a fresh instance into one node of a run.

Steps, in order: schedule the hard power-off (``shutdown -h +MINUTES``) before anything else can
fail; arm a trap that powers off when the script ends, whatever the outcome (the instance's
shutdown behaviour is *terminate*, so off means gone, not billed); fetch the run's code snapshot
from S3; install it with its pinned constraints; start ``python -m launcher.node.agent`` exactly as
the local backend does, with the IMDSv2 spot-interruption watcher.

Every value reaches the script once, in the assignment block at the top, quoted with
:func:`shlex.quote`; the rest of the script only expands those variables inside double quotes.
So a hostile run name, path or argument is data, never code.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

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
launch_power_off() {
    echo "launch: node $LAUNCH_NODE powering off"
    # The bootstrap's own log goes next to the node's record: why a node failed to start.
    aws s3 cp --only-show-errors "$LAUNCH_WORK_DIR/bootstrap.log" \
        "$LAUNCH_ROOT/runs/$LAUNCH_RUN/nodes/$LAUNCH_NODE.boot.log" || true
    sync
    shutdown -h now
}
# Power off as soon as this script ends, success or failure: no node idles on the bill.
trap launch_power_off EXIT
set -e
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
    ${LAUNCH_MAX_RUNTIME:+--max-runtime "$LAUNCH_MAX_RUNTIME"}
"""


@dataclass(frozen=True)
class UserDataValues:
    """Every value the script uses. Validated where a shape is known; quoted regardless."""

    root_url: str  # s3://BUCKET/PREFIX
    run: str
    node: str
    region: str
    max_runtime: int | None = None  # seconds per attempt, the agent's --max-runtime
    attempts: int = 1  # the most attempts one node may run (experiments x tries)
    work_dir: str = DEFAULT_WORK_DIR

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
    if not v.root_url.startswith("s3://"):
        raise SpecError(f"the aws backend's root must be s3://..., not {v.root_url!r}")
    if v.max_runtime is not None and (isinstance(v.max_runtime, bool) or v.max_runtime <= 0):
        raise SpecError(f"max_runtime must be a positive number of seconds, not {v.max_runtime}")


def assignments(v: UserDataValues) -> str:
    """The script's only lines that carry values: ``NAME=<shlex-quoted value>``."""
    values = {
        "LAUNCH_ROOT": v.root_url,
        "LAUNCH_RUN": v.run,
        "LAUNCH_NODE": v.node,
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
