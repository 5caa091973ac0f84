"""The peer baseline of the train benchmark: the same training written as plain PyTorch.

What a user's own script would be: ``torch.utils.data.DataLoader`` worker processes reading the
same Parquet shards, DDP over gloo in ``world`` processes started by ``torch.multiprocessing``.
Everything that is not Ray is the project's own code, imported rather than copied: the model
(``build_model``), optimizer and lr schedule, ``RegionLoss``, ``decode_augment`` (JPEG decode +
darknet augmentation, run in the DataLoader workers as it runs in Ray Data's map tasks), and
``JointBatches`` (the joint det / cls batch mix and the resize to the step's size, run in the
trainer as in the Ray Train loop). Rank 0 writes its log windows (time, step, images/s, data
wait) as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import torch


class ShardRows(torch.utils.data.IterableDataset):
    """Endless micro-batches of one row kind: every DataLoader worker reads the shard files, takes
    its rank's and its own share of a freshly shuffled row order each epoch, and decodes +
    augments ``batch_size`` rows at a time with the project's ``decode_augment``."""

    def __init__(self, files: list[str], kind: str, batch_size: int, size: int, seed: int, rank: int,
                 world: int) -> None:
        self.files, self.kind, self.batch_size, self.size = files, kind, batch_size, size
        self.seed, self.rank, self.world = seed, rank, world

    def __iter__(self):
        import numpy as np
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from pipelines.shards import TRAIN_COLUMNS
        from pipelines.train.data import decode_augment

        table = pq.ParquetDataset(self.files).read(columns=TRAIN_COLUMNS)
        table = table.filter(pc.equal(table["kind"], self.kind))
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(table.num_rows)
            mine = order[self.rank::self.world][wid::nw]
            for i in range(0, len(mine) - self.batch_size + 1, self.batch_size):
                out = decode_augment(table.take(mine[i:i + self.batch_size]), self.size, self.seed)
                yield {k: torch.from_numpy(v) for k, v in out.items()}
            epoch += 1


class LoaderShard:
    """A DataLoader where JointBatches expects a Ray dataset shard: ``iter_torch_batches`` yields
    its (already batched) items. The loader is endless, so a pass never ends."""

    def __init__(self, loader: torch.utils.data.DataLoader) -> None:
        self.loader = loader

    def iter_torch_batches(self, **_: Any):
        return iter(self.loader)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, cfg_dict: dict[str, Any], parents: list[int], files: list[str],
              loader_workers: int, out_path: str) -> None:
    import torch.distributed as dist

    from pipelines.config import config_from_dict
    from pipelines.train.data import STREAM_KIND, JointBatches, batch_split, canvas_size, multiscale_size
    from pipelines.train.loop import build_model, forward, prepare_for_training, train_precision
    from pipelines.train.optim import build_optimizer, learning_rate, param_groups, set_lr
    from yolo_core.region import RegionLoss
    from yolo_core.tree import Tree

    cfg = config_from_dict(cfg_dict)
    t = cfg.train
    torch.set_num_threads(t.torch_threads or t.cpus_per_worker)  # what Ray Train gives a worker
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(t.seed + rank)
    tree = Tree(parents)
    # The same memory format and autocast as the Ray path's loop (pipelines/train/loop.py).
    model = torch.nn.parallel.DistributedDataParallel(prepare_for_training(build_model(cfg.model, t, tree, None), t))
    precision = train_precision(t, torch.device("cpu"))
    core = model.module
    optimizer = build_optimizer(param_groups(model, t.weight_decay), t)
    loss_fn = RegionLoss(core.anchors.detach().cpu(), core.num_classes, tree=tree, variant=t.loss_variant,
                         cls_select=t.cls_select, cls_topk=t.cls_topk, cls_loss_weight=t.cls_loss_weight,
                         location=core.region.spec.location)
    counts = batch_split(t)
    shards = {
        name: LoaderShard(torch.utils.data.DataLoader(
            ShardRows(files, STREAM_KIND[name], n, canvas_size(t), t.seed, rank, world), batch_size=None,
            num_workers=loader_workers, prefetch_factor=8, persistent_workers=True))
        for name, n in counts.items()
    }
    batches = JointBatches(shards, counts, t.seed + rank)
    micro, seen, windows = sum(counts.values()), 0, []
    window_start, window_steps = time.perf_counter(), 0
    for step in range(t.max_steps):
        set_lr(optimizer, learning_rate(step, t, world))
        optimizer.zero_grad(set_to_none=True)
        batch = batches.next(multiscale_size(step, t))
        seen += micro * world
        targets = {k: batch[k] for k in ("boxes", "labels", "image_label")}
        loss_fn(forward(model, batch["image"], t, precision), targets, seen)["total"].backward()
        optimizer.step()
        window_steps += 1
        if (step + 1) % t.log_every == 0:
            elapsed = time.perf_counter() - window_start
            windows.append({"time": time.time(), "step": step + 1,
                            "images_per_s": window_steps * t.batch_size * world / elapsed,
                            "data_wait_fraction": batches.wait_s / elapsed})
            window_start, window_steps, batches.wait_s = time.perf_counter(), 0, 0.0
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(windows, f)
    dist.destroy_process_group()


def run_plain(cfg, parents: list[int], files: list[str], loader_workers: int, out_path: str) -> list[dict[str, Any]]:
    """Train ``cfg.train.max_steps`` steps on ``cfg.train.num_workers`` DDP ranks; rank 0's windows."""
    import torch.multiprocessing as mp

    world = cfg.train.num_workers
    mp.spawn(rank_main, args=(world, free_port(), cfg.to_dict(), parents, files, loader_workers, out_path),
             nprocs=world, join=True)
    with open(out_path) as f:
        return json.load(f)
