"""What differs between one process and a Ray Train worker (:class:`Context`): the device, how the
model is wrapped, how counts are all-reduced, where the epoch's rows come from and where checkpoints
go. :class:`LocalContext` is the one-process one (``--local``); :mod:`htr_ray.distributed.train` has the
Ray Train one.
"""

from __future__ import annotations

import json
import os
import random
from typing import Callable, Iterable

import torch

from htr_ray.io import storage
from htr_ray.models import checkpoint
from htr_ray.training.config import TrainConfig
from htr_ray.training.data import load_rows, mixing_plan


class Context:
    """What differs between one process and a Ray Train worker. The default runs locally."""

    rank = 0
    world_size = 1

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    def device(self) -> torch.device:
        want = self.cfg.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(want)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        return t

    def train_rows(self, epoch: int) -> Iterable[dict]:
        raise NotImplementedError

    def val_rows(self) -> list[dict]:
        raise NotImplementedError

    def latest_checkpoint(self) -> str | None:
        raise NotImplementedError

    def report(self, metrics: dict, save_fn: Callable[[str], None]) -> None:
        raise NotImplementedError


class LocalContext(Context):
    """One process, data in memory, checkpoints under ``cfg.output`` (``epoch-NNNN`` folders)."""

    def __init__(self, cfg: TrainConfig, sources: list[list[dict]] | None = None, val: list[dict] | None = None):
        super().__init__(cfg)
        if sources is None:
            sources = [load_rows(u, cfg.train_split) for u in cfg.data]
        if val is None:
            val = [r for u in (cfg.val_data or cfg.data[:1]) for r in load_rows(u, cfg.val_split)]
        self.sources, self.val = sources, val
        self.sizes = [len(s) for s in sources]

    def epoch_plan(self) -> list[int]:
        """Samples drawn from each source in one epoch."""
        return mixing_plan(self.sizes, self.cfg.weights, self.cfg.epoch_size)

    def train_rows(self, epoch: int) -> list[dict]:
        rng = random.Random(self.cfg.seed * 1000 + epoch)
        out: list[dict] = []
        for src, n in zip(self.sources, self.epoch_plan()):
            idx: list[int] = []
            while len(idx) < n:
                perm = list(range(len(src)))
                rng.shuffle(perm)
                idx.extend(perm[: n - len(idx)])
            out.extend(src[i] for i in idx)
        rng.shuffle(out)
        return out

    def val_rows(self) -> list[dict]:
        return self.val

    def _epoch_dirs(self) -> list[str]:
        try:
            names = {storage.parse(u).path.replace(os.sep, "/").rsplit("/", 2)[-2]
                     for u in storage.list_uris(self.cfg.output, suffixes=(checkpoint.META_FILE,))}
        except storage.StorageError:
            return []
        return sorted(n for n in names if n.startswith("epoch-"))

    def latest_checkpoint(self) -> str | None:
        dirs = self._epoch_dirs()
        return storage.join(self.cfg.output, dirs[-1]) if dirs else None

    def report(self, metrics: dict, save_fn: Callable[[str], None]) -> None:
        uri = storage.join(self.cfg.output, f"epoch-{metrics['epoch']:04d}")
        save_fn(uri)
        self._prune()

    def _prune(self) -> None:
        scored = []
        for d in self._epoch_dirs():
            uri = storage.join(self.cfg.output, d)
            meta = checkpoint.read_meta(uri)
            scored.append((meta["metrics"]["score"], meta["epoch"], uri))
        if not scored:
            return
        latest = max(scored, key=lambda s: s[1])
        best = sorted(scored)[: max(1, self.cfg.keep)]
        keepers = {s[2] for s in best} | {latest[2]}
        for _, _, uri in scored:
            if uri not in keepers:
                for name in (checkpoint.META_FILE, checkpoint.WEIGHTS_FILE, checkpoint.STATE_FILE):
                    storage.delete(storage.join(uri, name))
                loc = storage.parse(uri)
                if loc.scheme == "file":
                    try:
                        os.rmdir(loc.path)
                    except OSError:
                        pass
        top = sorted(scored)[0]
        storage.write_text(storage.join(self.cfg.output, "best.json"),
                           json.dumps({"best": top[2], "score": top[0], "epoch": top[1]}) + "\n")

    def best_checkpoint(self) -> str | None:
        uri = storage.join(self.cfg.output, "best.json")
        if not storage.exists(uri):
            return None
        return json.loads(storage.read_text(uri))["best"]
