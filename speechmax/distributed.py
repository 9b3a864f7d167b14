"""Running under ``torchrun``: which rank this process is, its share of the work, and the few collective steps the
commands need (a settings check, a barrier, a gather). Plain runs are a world of one and never touch
``torch.distributed``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; :func:`current` reads them and, in
a world of more than one, joins the process group (gloo on CPU, NCCL where CUDA is there). Work is split by
:meth:`World.shard` (item i goes to rank i mod size), so what a rank computes depends only on the item, not on
the world size -- a run gives the same files on any number of ranks.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class SettingsMismatch(RuntimeError):
    """Ranks of one run were started with different settings."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes what the ranks share (manifest, metrics, report)."""
        return self.rank == 0

    def owns(self, i: int) -> bool:
        """Whether item ``i`` of the work is this rank's."""
        return i % self.size == self.rank

    def shard(self, items) -> list:
        """This rank's items: every ``size``-th, from its rank."""
        return [x for i, x in enumerate(items) if self.owns(i)]

    def default_threads(self) -> int:
        """The cores this process may use, divided among the ranks on its machine (no oversubscription)."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:   # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // self.local_size)

    def threads(self, given: int | None) -> int | None:
        """The threads a command uses: ``given`` if set; under torchrun :meth:`default_threads`; else None
        (torch's default)."""
        return given if given is not None or not self.distributed else self.default_threads()

    def describe(self) -> dict:
        return {"world_size": self.size, "local_world_size": self.local_size}


def from_env(env=None) -> World:
    """The world torchrun's variables describe; a world of one without them."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    try:
        rank, size = int(env.get("RANK", 0)), int(env["WORLD_SIZE"])
        local_rank, local_size = int(env.get("LOCAL_RANK", rank)), int(env.get("LOCAL_WORLD_SIZE", size))
    except ValueError as e:
        raise ValueError(f"torchrun's environment is malformed ({e}): {', '.join(f'{k}={env.get(k)}' for k in ENV)}") \
            from None
    if not (0 <= rank < size and 0 <= local_rank < local_size):
        raise ValueError(f"torchrun's environment is inconsistent: {', '.join(f'{k}={env.get(k)}' for k in ENV)}")
    return World(rank, size, local_rank, local_size)


def current() -> World:
    """This process's world, joining the process group first if it is more than one process and has not yet."""
    world = from_env()
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # closed before the interpreter tears down: a group left open at exit has its worker threads destroyed
        # still running, which aborts the process ("terminate called without an active exception", SIGABRT)
        # now and then -- after its work was done and written
        atexit.register(_close_group)
    return world


def _close_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def gather(world: World, obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (a world of one: ``[obj]``)."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the ranks, in place (a world of one: as it is); returns it."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


class RankFailed(RuntimeError):
    """What rank 0 did for every rank failed; the other ranks stop with its message."""


def main_first(world: World, fn):
    """``fn()`` on rank 0 while the others wait; they go on once it is done. If it raised, rank 0 re-raises and
    every other rank raises :class:`RankFailed` with its message (no rank is left waiting). Returns ``fn()``'s
    value on rank 0, None elsewhere."""
    value, error = None, None
    if world.is_main:
        try:
            value = fn()
        except BaseException as e:   # shared first, so no rank waits forever, then raised as it was
            error = e
    if world.distributed:
        outcome = gather(world, None if error is None else f"{type(error).__name__}: {error}")[0]
        if outcome is not None and not world.is_main:
            raise RankFailed(f"rank 0 failed: {outcome}")
    if error is not None:
        raise error
    return value


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_same_settings(world: World, settings: dict) -> None:
    """Every rank must run the same command: compared by hash before anything is written; a difference raises
    :class:`SettingsMismatch` on every rank, naming the ranks and the keys that differ."""
    mine = settings_hash(settings)
    hashes = gather(world, mine)
    if len(set(hashes)) == 1:
        return
    every = gather(world, settings)
    keys = sorted({k for s in every for k in s if any(s.get(k) != t.get(k) for t in every)})
    odd = [r for r, h in enumerate(hashes) if h != hashes[0]]
    raise SettingsMismatch(f"the ranks were started with different settings (rank(s) {odd} differ from rank 0 in: "
                           f"{', '.join(keys)}); start every rank with the same command")
