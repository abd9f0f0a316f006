"""A stand-in for a multi-node training, for the contract suite's gang cases: every rank joins
one gloo group from the launcher's variables and all-reduces once per step, so the ranks are
coupled as DDP couples them; rank 0 writes last.ckpt (the step reached) after each step, and
every rank appends what it did to ``--record`` (JSON lines: rank, pid, start step, times);
``--meet DIR`` makes experiments wait for each other (a check that they ran at once that does
not depend on timing)."""

GANG_JOB = """
import argparse, datetime, json, os, sys, time
from pathlib import Path

import torch
import torch.distributed as dist

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.1)
p.add_argument("--fail-rank", type=int, default=None, help="this rank exits 1 after step 1")
p.add_argument("--record", default=None)
p.add_argument("--lr", default="0.1")
p.add_argument("--meet", default=None, help="rank 0 waits in this folder until --meet-count "
               "experiments' rank 0 are there: they run at the same time, or it exits 2")
p.add_argument("--meet-count", type=int, default=2)
args = p.parse_args()

rank, world = int(os.environ["NODE_RANK"]), int(os.environ["WORLD_SIZE"])
art = Path(os.environ["LAUNCH_ARTIFACTS_DIR"])
ckpt = art / "checkpoints" / "last.ckpt"
start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
attempt = int(os.environ["LAUNCH_ATTEMPT"])


def record(**kw):
    if args.record:
        with open(args.record, "a") as f:
            f.write(json.dumps(dict(kw, rank=rank, pid=os.getpid(), attempt=attempt,
                                    exp=os.environ["LAUNCH_EXPERIMENT"])) + "\\n")


record(event="start", step=start, time=time.time(),
       env={k: v for k, v in os.environ.items()
            if k in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "WORLD_SIZE")
            or k.startswith("LAUNCH_NODE") or k.startswith("LAUNCH_NUM")
            or k.startswith("LAUNCH_GPUS")})
dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:"
                        f"{os.environ['MASTER_PORT']}", rank=rank, world_size=world,
                        timeout=datetime.timedelta(seconds=60))
print(f"rank {rank} of {world} joined, start_step={start} attempt={attempt}", flush=True)
if args.meet and rank == 0:
    meet = Path(args.meet)
    meet.mkdir(parents=True, exist_ok=True)
    (meet / os.environ["LAUNCH_EXPERIMENT"]).touch()
    deadline = time.monotonic() + 120
    while len(list(meet.iterdir())) < args.meet_count:
        if time.monotonic() > deadline:
            print("the other experiments never ran at the same time", flush=True)
            sys.exit(2)
        time.sleep(0.1)
for step in range(start, args.steps):
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    time.sleep(args.sleep)
    if rank == 0:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps({"step": step + 1}))
        os.replace(tmp, ckpt)
    print(f"step {step + 1} sum {value.item():g}", flush=True)
    if args.fail_rank == rank and step + 1 >= start + 1:
        print("failing on purpose", flush=True)
        sys.exit(1)
record(event="end", step=args.steps, time=time.time())
dist.destroy_process_group()
"""
