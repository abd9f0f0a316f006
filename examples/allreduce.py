"""A plain multi-node script, no Lightning: every rank joins one gloo process group from the
variables the launcher sets, and all-reduces its rank + 1.

    launch run --nodes 2 --gpus 0 --wait examples/allreduce.py

Each rank prints ``sum S over W processes``; with 2 nodes S is 1 + 2 = 3.
"""

import os

import torch
import torch.distributed as dist


def main() -> None:
    rank, world = int(os.environ["NODE_RANK"]), int(os.environ["WORLD_SIZE"])
    address = f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=world)
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    print(f"rank {rank}: sum {value.item():g} over {dist.get_world_size()} processes", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
