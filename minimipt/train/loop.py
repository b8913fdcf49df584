"""The training loop: AdamW + one-cycle schedule, bf16 autocast on CUDA, atomic checkpoints,
resume, a wall-clock budget, and a results file with full provenance.

Files in the run folder ``out`` (claimed first, see :mod:`minimipt.train.rundir`):

* ``checkpoint.pt``: model, optimizer, scheduler, step, RNG states, elapsed time (atomic writes),
  with its sha256 in ``checkpoint.pt.sha256`` (checked on resume);
* ``results.json``: config, seed, git commit, versions, hardware, wall time, parameter counts,
  training curve and final metrics; ``"complete": false`` while the run is unfinished, plus
  ``"failed": "<reason>"`` when it stopped on a non-finite loss or parameters;
* ``run.lock``: the lock held while a run writes, naming its owner.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from .. import env
from ..optim import count_parameters, param_groups
from . import distributed
from ..fileio import atomic_write_json
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .provenance import now_iso, provenance
from .rundir import CKPT, RESULTS, RunFolder
from .tasks import build_task

__all__ = ["train", "TrainingFailed"]

_CKPT_KEYS = {"model", "optimizer", "scheduler", "step", "elapsed", "history", "config", "rng_cpu"}
WARMUP_STEPS = 20
SYNC_EVERY = 25  # steps between loss checks and stop decisions (each waits for the device)


def _amp_factory(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class TrainingFailed(FloatingPointError):
    """The run stopped on a non-finite loss or parameters; ``results`` is what was written (marked
    ``"complete": false, "failed": reason``)."""

    def __init__(self, message: str, results: dict):
        super().__init__(message)
        self.results = results


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          max_minutes: float | None = None, progress: bool = True, stop_after_steps: int | None = None) -> dict:
    """Train ``cfg`` and write ``out/results.json``; returns the results dictionary.

    ``resume``: continue from ``out/checkpoint.pt`` (the config must match). ``overwrite``: replace the
    run already in ``out``; without either, a folder that holds a run is refused. ``max_minutes``:
    stop cleanly (checkpoint + partial results) once this much wall time has passed in this call, so a
    long run can advance in bounded pieces. ``stop_after_steps``: stop after this many steps in this
    call (tests use it to interrupt a run deterministically).

    A non-finite training loss or non-finite parameters stop the run: the results are written marked
    failed and :class:`TrainingFailed` is raised. The last checkpoint is never overwritten by a
    non-finite model.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be a TrainConfig (see make_config); got {type(cfg).__name__}")
    if max_minutes is not None and (isinstance(max_minutes, bool) or not isinstance(max_minutes, (int, float))
                                    or not max_minutes > 0 or not math.isfinite(max_minutes)):
        raise ValueError(f"max_minutes must be None or a positive number of minutes; got {max_minutes!r}")
    if stop_after_steps is not None and (isinstance(stop_after_steps, bool) or not isinstance(stop_after_steps, int)
                                         or stop_after_steps < 1):
        raise ValueError(f"stop_after_steps must be None or an int >= 1; got {stop_after_steps!r}")
    t_start = time.time()
    device = env.get_device(cfg.device)
    info, device = distributed.init(device)
    with RunFolder(out, resume=resume, overwrite=overwrite, writer=info.is_main) as folder:
        return _train(cfg, folder.path, resume, max_minutes, progress, stop_after_steps, t_start, device, info)


def _train(cfg: TrainConfig, out: Path, resume: bool, max_minutes: float | None, progress: bool,
           stop_after_steps: int | None, t_start: float, device: torch.device, info: distributed.DistInfo) -> dict:
    from tqdm.auto import tqdm

    ckpt_path = out / CKPT
    env.seed_everything(cfg.seed)
    task = build_task(cfg)
    model = task.build_model(cfg).to(device)
    n_params = {"total": count_parameters(model), "non_embedding": count_parameters(model, embeddings=False)}
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, verbose=progress and info.is_main),
                            lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * task.steps_per_epoch))
    # OneCycleLR divides by (pct_start · total_steps − 1): a warm-up of exactly one step is nudged
    pct = cfg.warmup_frac if cfg.warmup_frac * total_steps != 1 else (1 + 1e-6) / total_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total_steps,
                                                pct_start=pct, anneal_strategy="cos",
                                                div_factor=25.0, final_div_factor=1e3)
    step, elapsed, history = 0, 0.0, []
    if resume:
        ck = load_checkpoint(ckpt_path, map_location=device)
        missing = sorted(_CKPT_KEYS - set(ck))
        if missing:
            raise CheckpointError(f"{ckpt_path} is not a training checkpoint of this code (it lacks {missing}); "
                                  "start the run again with --overwrite")
        if ck["config"] != _comparable(cfg):
            diff = {k: (ck["config"].get(k), v) for k, v in _comparable(cfg).items() if ck["config"].get(k) != v}
            raise ValueError(f"cannot resume {ckpt_path}: the config differs (checkpoint, now): {diff}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, elapsed, history = ck["step"], ck["elapsed"], ck["history"]
        torch.set_rng_state(ck["rng_cpu"].cpu())  # map_location moved it to the device
        if device.type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state(ck["rng_cuda"].cpu())
    core = model
    if info.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    amp = _amp_factory(device, cfg.amp)
    model_config = {"class": type(core).__name__, **core.config.to_dict()}  # what the weights belong to
    meta = {"config": cfg.to_dict(), "model_config": model_config, "seed": cfg.seed, "task": task.describe(),
            "params": n_params,
            "tokens_per_step": task.tokens_per_step,
            "total_steps": total_steps, **provenance(device, info.world_size)}

    def checkpoint() -> None:
        if not _finite_parameters(core):  # every rank (their parameters are equal); keep the last good file
            fail(f"non-finite parameters after step {step}")
        if not info.is_main:
            return
        state = {"model": core.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": step, "elapsed": elapsed + (time.time() - t_start), "history": history,
                 "config": _comparable(cfg), "model_config": model_config, "rng_cpu": torch.get_rng_state()}
        if device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state()
        save_checkpoint(state, ckpt_path)

    def write_results(final: dict | None, complete: bool, failed: str | None = None) -> dict:
        wall = elapsed + (time.time() - t_start)
        res = {**meta, "complete": complete, **({"failed": failed} if failed else {}),
               "steps": step, "wall_time_s": round(wall, 2),
               "train_tokens_per_s": round(step * task.tokens_per_step / max(train_time, 1e-9), 1) if step else None,
               # after the first WARMUP_STEPS steps of this call (compilation, allocator warm-up)
               "steady_tokens_per_s": (round(steady[1] * task.tokens_per_step / max(steady[0], 1e-9), 1)
                                       if steady[1] else None),
               "finished": now_iso(), "history": history, "metrics": final or {}}
        if info.is_main:
            atomic_write_json(out / RESULTS, res)
        return res

    def fail(reason: str) -> None:
        """Stop: results marked failed (the checkpoint keeps the last finite model), then raise."""
        res = write_results(None, complete=False, failed=reason)
        bar.close()
        raise TrainingFailed(f"{reason}; the run stopped and {out / RESULTS} is marked failed (lower the learning "
                             f"rate, now lr={cfg.lr}, or check grad_clip={cfg.grad_clip})", res)

    model.train()
    # The loop never waits for the device except every SYNC_EVERY steps (loss check, stop decision)
    # and at evaluations, so the host can queue the next steps while the device works.
    loss_sum, n_running = torch.zeros((), device=device), 0
    train_time = elapsed  # seconds spent in training steps (evaluation and checkpoints excluded)
    steady = [0.0, 0]  # the same after the first WARMUP_STEPS steps of this call: seconds, steps
    steps_this_call = 0
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and info.is_main), desc=f"{cfg.task}/{cfg.model}",
               unit="step")
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    stopped_early = False
    clock = time.time()  # start of the current stretch of training steps

    def close_stretch() -> None:
        """Wait for the device and add the stretch of steps since ``clock`` to the step time."""
        nonlocal train_time, clock
        _sync(device)
        now = time.time()
        train_time += now - clock
        if steps_this_call > WARMUP_STEPS:
            steady[0] += now - clock
        clock = now

    while step < total_steps:
        batch = task.batch(step, info, device)
        with amp():
            loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        steps_this_call += 1
        loss_sum += loss.detach()
        n_running += 1
        bar.update(1)
        if steps_this_call == WARMUP_STEPS:  # compilation and allocator warm-up end here
            close_stretch()
        if steps_this_call > WARMUP_STEPS:
            steady[1] += 1
        log_now = step % cfg.eval_every == 0 or step == total_steps
        # a wall-clock or step budget is a host-side decision; ranks agree on it at sync points only
        stop = bool(deadline and time.time() > deadline) or bool(stop_after_steps and steps_this_call >= stop_after_steps)
        if not (log_now or steps_this_call % SYNC_EVERY == 0 or step % cfg.ckpt_every == 0
                or (stop and not info.enabled)):
            continue
        # the logged loss is the global batch's: the mean over ranks of each rank's shard losses
        mean_loss = distributed.all_reduce_mean(loss_sum / n_running, info).item()
        if not math.isfinite(mean_loss):
            fail(f"training loss is {mean_loss} at step {step}")
        close_stretch()
        if log_now:
            entry = {"step": step, "train_loss": mean_loss, "lr": sched.get_last_lr()[0]}
            if info.is_main and "val" in _all_splits(task):
                entry["val"] = task.evaluate(core, "val", device, amp)
            history.append(entry)
            bar.set_postfix(loss=f"{mean_loss:.3f}")
            loss_sum.zero_()
            n_running = 0
        if step % cfg.ckpt_every == 0 and step < total_steps:
            checkpoint()
        if info.enabled:  # every rank must stop after the same step, or the others wait forever
            stop = distributed.all_reduce_mean(torch.tensor(float(stop), device=device), info).item() > 0
        clock = time.time()  # evaluation and checkpoint time is not step time
        if stop:
            stopped_early = step < total_steps
            break
    bar.close()
    if stopped_early:
        checkpoint()
        res = write_results(None, complete=False)
        distributed.shutdown()
        return res
    final = {}
    if info.is_main:
        for split in _all_splits(task):
            final[split] = task.evaluate(core, split, device, amp)
        sample = task.sample(core, device)
        if sample is not None:
            meta["sample"] = sample
    if info.enabled:
        meta["ranks_in_sync"] = distributed.parameters_in_sync(core, info)
    bad = [f"{split} loss {m['loss']}" for split, m in final.items() if not math.isfinite(m.get("loss", 0.0))]
    if bad:
        fail(f"non-finite evaluation after step {step}: {', '.join(bad)}")
    checkpoint()
    res = write_results(final, complete=True)
    if info.is_main and progress:
        print(f"done: {step} steps, {res['wall_time_s']} s; " +
              "; ".join(f"{k}: " + ", ".join(f"{m}={v:.4g}" for m, v in d.items() if isinstance(v, float))
                        for k, d in final.items()))
    distributed.shutdown()
    return res


@torch.no_grad()
def _finite_parameters(model: torch.nn.Module) -> bool:
    """Whether every parameter is finite (one host sync)."""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _all_splits(task) -> list[str]:
    splits = list(task.eval_splits())
    has_val = getattr(task, "val", None) is not None or "val" in splits
    return (["val"] if has_val and "val" not in splits else []) + splits


def _comparable(cfg: TrainConfig) -> dict:
    """The config fields that must match to resume (the device may change)."""
    d = cfg.to_dict()
    d.pop("device", None)
    return d
