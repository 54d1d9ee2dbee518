"""Several processes on one or more machines: torchrun plus DistributedDataParallel, with the chapter's batches.

`torchrun --nproc_per_node=2 train_classifier.py ...` runs the chapter's loop in N processes; each computes the
gradients of its share of every global batch, so the updates are those of one process with the whole batch.
"""

import contextlib
import os

import torch
import torch.distributed as dist

from beyond.model_setup import resolve_device


def distributed_environment():
    """(rank, world_size, local_rank) as torchrun sets them; (0, 1, 0) for an ordinary run."""
    return (int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")))


def setup_distributed(device="auto"):
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA) when WORLD_SIZE > 1; returns (rank, world, device)."""
    device = resolve_device(device) if isinstance(device, str) else device
    rank, world_size, local_rank = distributed_environment()
    if world_size == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"Several processes run on CUDA or the CPU, not on {device.type}; pass --device cpu.")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return rank, world_size, device


@contextlib.contextmanager
def printing_on_rank0_only():
    """Inside the block only rank 0 prints (one progress log, not N copies); errors still show on every stderr."""
    if distributed_environment()[0] == 0:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.redirect_stdout(devnull):
        yield


def rank0_first(stage):
    """Under torchrun, let rank 0 do a step first (downloads share file names): call "start" before, "end" after.

    Rank 0 waits at "end" and every other rank at "start", so they begin once rank 0 has finished; a plain run
    does nothing.
    """
    if dist.is_available() and dist.is_initialized() and (stage == "start") != (dist.get_rank() == 0):
        dist.barrier()


def cleanup_distributed():
    """Leave the process group (if any), so the program exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process():
    """True on rank 0 or in an ordinary run: the one process that prints and writes files."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return distributed_environment()[0] == 0


def unwrap_model(model):
    """The plain GPTModel inside a DistributedDataParallel wrapper (for saving, attributes, predicting)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class ShardedSampler(torch.utils.data.Sampler):
    """This process's share of every global batch, drawn from the single-process order.

    Unlike DistributedSampler (its own shuffle), it iterates the loader's own sampler, so N processes with
    batch_size B/N see exactly the examples one process with batch B sees in each step (gradients equal).
    """

    def __init__(self, base_sampler, global_batch_size, rank, world_size):
        self.base_sampler = base_sampler
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size

    def __len__(self):
        return len(self.base_sampler) // self.global_batch_size * self.global_batch_size // self.world_size

    def __iter__(self):
        order = list(self.base_sampler)  # draws the shuffle seed from torch's RNG exactly as one process would
        # the last incomplete global batch is dropped so every process runs the same number of steps
        order = order[: len(order) // self.global_batch_size * self.global_batch_size]
        return iter(order[self.rank::self.world_size])


class TrainingShards:
    """The training loader under DDP: this process's share of each global batch while the model trains, the whole
    global batches while it is evaluated.

    The chapter's loop estimates the training loss and accuracy on the first eval_iter batches of its training
    loader (in eval mode); reading whole batches there makes every process print and return what one process
    would, with the chapter's loop unchanged. Both loaders draw their shuffle from torch's RNG the same way.
    """

    def __init__(self, model, shard_loader, full_loader):
        self.model, self.shard_loader, self.full_loader = model, shard_loader, full_loader
        self.batch_size = shard_loader.batch_size

    def __len__(self):
        return len(self.shard_loader)  # the number of global batches, as len(full_loader)

    def __iter__(self):
        return iter(self.shard_loader if self.model.training else self.full_loader)


def distribute_training(model, train_loader, device):
    """Wrap the model in DDP and give this process its share of each global batch; returns (model, train_loader).

    train_loader's batch_size is the global batch: it must divide by the number of processes. A plain run
    (WORLD_SIZE 1) gets both back unchanged. The returned loader evaluates on whole batches (TrainingShards).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return model, train_loader
    rank, world_size = dist.get_rank(), dist.get_world_size()
    batch_size = train_loader.batch_size
    if batch_size is None or batch_size % world_size:
        raise ValueError(f"The batch size ({batch_size}) must divide by the number of processes ({world_size}); "
                         "pass a --batch-size that is a multiple of --nproc_per_node.")
    if len(train_loader) != len(train_loader.sampler) // batch_size:
        raise ValueError("Several processes need a training loader with drop_last=True (every global batch full); "
                         "create it as create_data_loaders does.")
    loader = torch.utils.data.DataLoader(
        train_loader.dataset, batch_size=batch_size // world_size,
        sampler=ShardedSampler(train_loader.sampler, batch_size, rank, world_size),
        collate_fn=train_loader.collate_fn, num_workers=train_loader.num_workers, drop_last=False)
    device_ids = [device.index] if device.type == "cuda" else None
    ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return ddp_model, TrainingShards(ddp_model, loader, train_loader)
