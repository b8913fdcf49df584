"""The training tasks: data, model, loss and evaluation behind one small interface.

* ``ag_news``: 4-way news topic classification (word-level tokens, right-padded to ``seq_len``).
* ``needle``: the paper's needle-in-a-haystack recall, generated (:mod:`minimipt.data.needle`).
* ``wikitext``: next-token language modelling on byte-level BPE tokens.
* ``mqar``: multi-query associative recall (Zoology), generated (:mod:`minimipt.data.mqar`).

Batches are a pure function of ``(seed, step)``: an epoch is a seeded permutation of the training
rows (classification) or a seeded draw of windows (language modelling). A resumed run therefore
sees exactly the batches an uninterrupted run would, and under ``torchrun`` every rank takes its own
slice ``rank::world_size`` of the same global batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MIPTConfig, TransformerConfig
from ..models import MIPTClassifier, MIPTLM
from ..transformer import TransformerClassifier, TransformerLM
from .config import TrainConfig, model_config
from .distributed import DistInfo

__all__ = ["Task", "ClassificationTask", "LMTask", "RecallTask", "build_task", "build_model", "model_config"]


def build_model(cfg: TrainConfig, vocab_size: int, n_classes: int | None, pad_id: int = 0,
                max_len: int | None = None) -> nn.Module:
    """The model a config asks for (see :func:`model_config`)."""
    mc = model_config(cfg, vocab_size, n_classes, pad_id, max_len)
    if isinstance(mc, MIPTConfig):
        return MIPTLM(mc) if n_classes is None else MIPTClassifier(mc)
    return TransformerLM(mc) if n_classes is None else TransformerClassifier(mc)


class Task:
    """Interface the training loop uses."""

    name: str
    vocab_size: int
    n_classes: int | None
    steps_per_epoch: int
    tokens_per_step: int

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        raise NotImplementedError

    def batch(self, step: int, info: DistInfo, device: torch.device):
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def eval_outputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """What ``evaluate`` scores for a batch: logits ``(n, C)``, targets ``(n,)`` and the model's aux."""
        logits, aux = model(x, return_aux=True)
        return logits, y, aux

    def evaluate(self, model: nn.Module, split: str, device: torch.device, amp) -> dict:
        raise NotImplementedError

    def describe(self) -> dict:
        return {}

    def sample(self, model: nn.Module, device: torch.device) -> dict | None:
        """A short generation from the trained model for the results file (language models only)."""
        return None


def _shard(rows: torch.Tensor, info: DistInfo) -> torch.Tensor:
    return rows[info.rank::info.world_size]


# --------------------------------------------------------------------------------------------
# classification


@dataclass
class _Rows:
    x: torch.Tensor  # (N, L) int64
    y: torch.Tensor  # (N,) int64


class ClassificationTask(Task):
    """Sequence classification: cross-entropy on ``(B, C)`` logits, accuracy on held-out rows."""

    def __init__(self, cfg: TrainConfig, train: _Rows, val: _Rows | None, evals: dict[str, _Rows],
                 vocab_size: int, n_classes: int, pad_id: int, protocol: str, eval_len: int | None = None):
        self.cfg, self.train, self.val, self.evals = cfg, train, val, evals
        self.vocab_size, self.n_classes, self.pad_id = vocab_size, n_classes, pad_id
        self.name, self.protocol = cfg.task, protocol
        self.steps_per_epoch = max(1, len(train.y) // cfg.batch_size)
        self.tokens_per_step = cfg.batch_size * cfg.seq_len
        self.eval_len = eval_len
        self._perm: tuple[int, torch.Tensor | None] = (-1, None)  # (epoch, its permutation)

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return build_model(cfg, self.vocab_size, self.n_classes, self.pad_id,
                           max_len=max(cfg.seq_len, self.eval_len or 0))

    def batch(self, step: int, info: DistInfo, device: torch.device):
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._perm[0] != epoch:  # one seeded permutation per epoch, drawn once
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.train.y), generator=g))
        rows = _shard(self._perm[1][k * self.cfg.batch_size:(k + 1) * self.cfg.batch_size], info)
        return self.train.x[rows].to(device, non_blocking=True), self.train.y[rows].to(device, non_blocking=True)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits, aux = model(x, return_aux=True)  # aux.loss: the cache's optional write penalty
        return F.cross_entropy(logits.float(), y) + aux.loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device, amp) -> dict:
        rows = self.val if split == "val" else self.evals[split]
        model.eval()
        correct, nll, n = 0, 0.0, 0
        written, held = [], []
        # same tokens per eval batch at any length: long test sequences come in smaller batches
        bs = max(1, self.cfg.batch_size * 2 * self.cfg.seq_len // rows.x.shape[1])
        for i in range(0, len(rows.y), bs):
            x, y = rows.x[i:i + bs].to(device), rows.y[i:i + bs].to(device)
            with amp():
                logits, y, aux = self.eval_outputs(model, x, y)
                logits = logits.float()
            correct += (logits.argmax(-1) == y).sum().item()
            nll += F.cross_entropy(logits, y, reduction="sum").item()
            n += len(y)
            stats = aux.cache_stats
            if stats:  # per sequence, averaged over layers
                written.append(torch.stack([s.written for s in stats]).float().mean(0).cpu())
                held.append(torch.stack([s.held for s in stats]).float().mean(0).cpu())
        model.train()
        out = {"accuracy": correct / n, "loss": nll / n, "n": n}
        if written:
            w, h = torch.cat(written), torch.cat(held)
            q = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
            out.update({"writes_per_seq": w.mean().item(), "slots_used_mean": h.mean().item(),
                        "writes_quantiles": dict(zip(["min", "p10", "median", "p90", "max"],
                                                     torch.quantile(w, q).tolist())),
                        "sparsity": 1 - w.mean().item() / rows.x.shape[1]})
        return out

    def eval_splits(self) -> list[str]:
        return list(self.evals)

    def describe(self) -> dict:
        return {"protocol": self.protocol, "n_train": len(self.train.y),
                "n_val": 0 if self.val is None else len(self.val.y),
                **{f"n_{k}": len(v.y) for k, v in self.evals.items()},
                "vocab_size": self.vocab_size, "n_classes": self.n_classes}


def _carve_val(rows: _Rows, fraction: float, seed: int) -> tuple[_Rows, _Rows | None]:
    if fraction <= 0:
        return rows, None
    g = torch.Generator().manual_seed(10_007 + seed)
    perm = torch.randperm(len(rows.y), generator=g)
    n_val = max(1, int(round(fraction * len(rows.y))))
    v, t = perm[:n_val], perm[n_val:]
    return _Rows(rows.x[t], rows.y[t]), _Rows(rows.x[v], rows.y[v])


def _ag_news_task(cfg: TrainConfig) -> ClassificationTask:
    from ..data.prepared import load_prepared, prepare

    if cfg.vocab_size != TrainConfig.vocab_size:
        raise ValueError(f"vocab_size={cfg.vocab_size} does not apply to ag_news (a word vocabulary cut by "
                         f"min_count, now {cfg.min_count}); set min_count instead")
    split = cfg.train_split
    target = ("ag_news-sample" if split.startswith("sample") else
              "ag_news-offline" if split.startswith("offline") else "ag_news")
    folder = prepare(target, src=cfg.data_root, min_count=cfg.min_count, split_seed=cfg.split_seed,
                     progress=False)
    name = folder.name
    train = _Rows(*load_prepared(name, split, folder.parent.parent).fixed_length(cfg.seq_len))
    ev = load_prepared(name, cfg.eval_split, folder.parent.parent)
    train, val = _carve_val(train, cfg.val_fraction, cfg.split_seed)
    protocol = {
        "ag_news-sample": "AG News bundled sample (smoke only): 600 train / 200 eval rows",
        "ag_news-offline": (f"AG News OFFLINE protocol: stratified 5,600 train / 2,000 eval rows of the official "
                            f"test file (split_seed={cfg.split_seed}); {cfg.val_fraction:.0%} of train held out "
                            f"for selection; not the standard 120k-train benchmark"),
        "ag_news": "AG News standard protocol: 120,000 train / 7,600 test",
    }[target]
    return ClassificationTask(cfg, train, val, {"eval": _Rows(*ev.fixed_length(cfg.seq_len))},
                              ev.vocab_size, 4, ev.meta["pad_id"], protocol)


def _needle_task(cfg: TrainConfig) -> ClassificationTask:
    from ..data import make_needle_task

    kw = {k: v for k, v in cfg.extra.items() if k in ("n_needles", "n_distractors", "needle_range", "n_noise")}
    base = 3 * cfg.split_seed + 1_000
    train = make_needle_task(cfg.n_train, cfg.seq_len, seed=base, **kw)
    val = make_needle_task(cfg.n_val, cfg.seq_len, seed=base + 1, **kw)
    evals = {"eval": make_needle_task(cfg.n_test, cfg.seq_len, seed=base + 2, **kw)}
    for n in cfg.eval_lengths:
        evals[f"eval_L{n}"] = make_needle_task(cfg.n_test, n, seed=base + 2, **kw)
    rows = {k: _Rows(t.tokens, t.labels) for k, t in evals.items()}
    protocol = (f"needle: length {cfg.seq_len}, {train.vocab.n_classes} classes, needle in the first 10% "
                f"unless set otherwise ({kw or 'defaults'}); {cfg.n_train} train / {cfg.n_val} val / "
                f"{cfg.n_test} held-out test sequences (fresh seeds), final model's accuracy")
    if cfg.eval_lengths:
        protocol += f"; also tested at lengths {cfg.eval_lengths} after training at length {cfg.seq_len}"
    return ClassificationTask(cfg, _Rows(train.tokens, train.labels), _Rows(val.tokens, val.labels), rows,
                              train.vocab.size, train.vocab.n_classes, train.vocab.pad, protocol,
                              max(cfg.eval_lengths, default=None))


# --------------------------------------------------------------------------------------------
# language modelling


class LMTask(Task):
    """Next-token prediction on a token stream; perplexity per token and per word."""

    def __init__(self, cfg: TrainConfig, train: torch.Tensor, evals: dict[str, tuple[torch.Tensor, int | None]],
                 vocab_size: int, protocol: str, tokenizer_path: str):
        self.cfg, self.train_tokens, self.evals = cfg, train, evals
        self.vocab_size, self.n_classes, self.name, self.protocol = vocab_size, None, cfg.task, protocol
        self.tokenizer_path = tokenizer_path
        self.steps_per_epoch = max(1, (len(train) - 1) // (cfg.batch_size * cfg.seq_len))
        self.tokens_per_step = cfg.batch_size * cfg.seq_len

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return build_model(cfg, self.vocab_size, None)

    def batch(self, step: int, info: DistInfo, device: torch.device):
        L = self.cfg.seq_len
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        starts = _shard(torch.randint(0, len(self.train_tokens) - L - 1, (self.cfg.batch_size,), generator=g), info)
        idx = starts[:, None] + torch.arange(L + 1)  # (b, L + 1)
        chunk = self.train_tokens[idx]
        return chunk[:, :-1].to(device, non_blocking=True), chunk[:, 1:].to(device, non_blocking=True)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        logits, aux = model(x, return_aux=True)  # (B, L, V); aux.loss: the cache's optional write penalty
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten()) + aux.loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, device: torch.device, amp) -> dict:
        """Non-overlapping windows of ``seq_len`` tokens, each from a fresh state."""
        tokens, n_words = self.evals[split]
        L, bs = self.cfg.seq_len, self.cfg.batch_size
        n_win = (len(tokens) - 1) // L
        if self.cfg.eval_batches:
            n_win = min(n_win, self.cfg.eval_batches * bs)
        model.eval()
        nll, count = 0.0, 0
        for i in range(0, n_win, bs):
            w = torch.arange(i, min(i + bs, n_win))
            idx = w[:, None] * L + torch.arange(L + 1)
            chunk = tokens[idx].to(device)
            with amp():
                logits = model(chunk[:, :-1]).float()
            nll += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
            count += chunk[:, 1:].numel()
        model.train()
        out = {"loss": nll / count, "ppl_token": math.exp(nll / count), "tokens": count}
        if n_words and count == len(tokens) - 1 - (len(tokens) - 1) % L:
            # words covered by the evaluated windows, in proportion (the tail < L tokens is dropped)
            words = n_words * count / (len(tokens) - 1)
            out["ppl_word"] = math.exp(nll / words)
            out["words"] = round(words, 1)
        return out

    def eval_splits(self) -> list[str]:
        return list(self.evals)

    @torch.no_grad()
    def sample(self, model: nn.Module, device: torch.device, prompt_tokens: int = 32, new_tokens: int = 64,
               temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> dict:
        """Continue the first ``prompt_tokens`` of the held-out split with ``model.generate`` (the
        prompt in one parallel call, then ``step``: O(1) state per token for MIPT, a KV cache for the
        Transformer)."""
        from ..data.tokenizer import load_tokenizer

        tokens = self.evals["eval"][0]
        embed = getattr(model, "embed", None)
        limit = embed.max_len if getattr(embed, "pos", None) is not None else None  # learned positions end there
        if limit is not None and prompt_tokens + new_tokens > limit:
            prompt_tokens, new_tokens = limit // 2, limit - limit // 2
        prompt = tokens[:prompt_tokens].to(device)
        g = torch.Generator(device=device).manual_seed(seed)
        out = model.generate(prompt, new_tokens, temperature=temperature, top_k=top_k, generator=g)  # eval mode inside
        tok = load_tokenizer(self.tokenizer_path)
        ids = out.tolist()
        return {"prompt": tok.decode(ids[:prompt_tokens]), "continuation": tok.decode(ids[prompt_tokens:]),
                "prompt_from": "the first tokens of the held-out split", "temperature": temperature,
                "top_k": top_k, "seed": seed, "path": "model.generate (parallel prefill, then step)"}

    def describe(self) -> dict:
        return {"protocol": self.protocol, "train_tokens": len(self.train_tokens), "vocab_size": self.vocab_size,
                # relative to the data folder (MINIMIPT_DATA or data/): no machine-local path in results files
                "tokenizer": Path(self.tokenizer_path).relative_to(Path(self.tokenizer_path).parents[2]).as_posix(),
                **{f"{k}_tokens": len(v[0]) for k, v in self.evals.items()}}


def _wikitext_task(cfg: TrainConfig) -> LMTask:
    from ..data.prepared import load_prepared, prepare

    sample = cfg.train_split.startswith("sample")
    target = "wikitext-2-sample" if sample else cfg.dataset
    folder = prepare(target, src=cfg.data_root, vocab_size=cfg.vocab_size, progress=False)
    root = folder.parent.parent
    train = load_prepared(folder.name, cfg.train_split, root)
    evals = {}
    for split in (("sample-valid", "sample-test") if sample else ("valid", "test")):
        s = load_prepared(folder.name, split, root)
        evals["val" if "valid" in split else "eval"] = (s.as_tensor(), s.n_words)
    protocol = ("WikiText-2 bundled excerpt (smoke only)" if sample else
                f"{cfg.dataset}: train on train, select on valid, report test; byte-level BPE "
                f"V={train.vocab_size:,}" + (" (OFFLINE protocol: WikiText-2 train, a 2% subset of "
                                            "WikiText-103's)" if cfg.dataset == "wikitext-2" else ""))
    task = LMTask(cfg, train.as_tensor(), evals, train.vocab_size, protocol, str(folder / "tokenizer.json"))
    return task


# --------------------------------------------------------------------------------------------
# multi-query associative recall


class RecallTask(ClassificationTask):
    """MQAR: a language model reads the pairs and answers at every query position.

    Batches are those of :class:`ClassificationTask` (a seeded permutation of the training rows per
    epoch) with ``(N, L)`` targets instead of labels (-100, :data:`~minimipt.data.mqar.IGNORE`, where
    nothing is asked). The loss is the cross-entropy of the next-token logits at the query positions
    only; the accuracy is the fraction of queries whose arg-max is the right value.
    """

    def build_model(self, cfg: TrainConfig) -> nn.Module:
        return build_model(cfg, self.vocab_size, None, max_len=cfg.seq_len)

    def query_logits(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Next-token logits at the ``P`` query positions of each row ``(B, P, V)``, their targets
        ``(B, P)`` and the model's :class:`~minimipt.state.ModelAux`. Only those positions go through the
        tied output layer: at L = 2,048 and V = 8,192 the other logits would cost 2,048 / P times more and
        be thrown away. A DistributedDataParallel model goes through its own forward (full logits), so
        that its gradient hooks run."""
        pos = torch.argsort((y >= 0).to(torch.int8), dim=1, descending=True, stable=True)[:, :self.cfg.n_pairs]
        target = y.gather(1, pos)  # (B, P); every row asks exactly P queries
        if isinstance(model, nn.parallel.DistributedDataParallel):
            logits, aux = model(x, return_aux=True)
            return logits.gather(1, pos[..., None].expand(-1, -1, self.vocab_size)), target, aux
        h, aux = model.features(x, return_aux=True)  # (B, L, d), causal
        h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, d)
        return F.linear(h, model.embed.tok.weight), target, aux  # tied output layer, as the LMs' forward

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        logits, target, aux = self.query_logits(model, *batch)  # (B, P, V), (B, P)
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten()) + aux.loss

    @torch.no_grad()
    def eval_outputs(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        """Only the query positions are scored: ``(B·P, V)`` logits and ``(B·P,)`` targets."""
        logits, target, aux = self.query_logits(model, x, y)
        return logits.flatten(0, 1), target.flatten(), aux

    def describe(self) -> dict:
        return {**super().describe(), "n_pairs": self.cfg.n_pairs}


def _mqar_task(cfg: TrainConfig) -> RecallTask:
    from ..data.mqar import make_mqar_task

    kw = dict(length=cfg.seq_len, n_pairs=cfg.n_pairs, vocab_size=cfg.vocab_size,
              power_a=cfg.extra.get("power_a", 0.01), random_fillers=cfg.extra.get("random_fillers", False))
    base = 3 * cfg.split_seed + 2_000
    sets = [make_mqar_task(n, seed=base + i, **kw) for i, n in enumerate((cfg.n_train, cfg.n_val, cfg.n_test))]
    train, val, test = (_Rows(t.tokens, t.targets) for t in sets)
    protocol = (f"MQAR (Zoology): length {cfg.seq_len}, {cfg.n_pairs} key-value pairs, V={cfg.vocab_size:,}, "
                f"{'random' if kw['random_fillers'] else 'zero'} fillers, query gaps ∝ g^(a-1) with a={kw['power_a']}; "
                f"{cfg.n_train} train / {cfg.n_val} val / {cfg.n_test} held-out sequences (fresh seeds); accuracy "
                f"over the query positions, final model")
    return RecallTask(cfg, train, val, {"eval": test}, cfg.vocab_size, None, None, protocol)


def build_task(cfg: TrainConfig) -> Task:
    """The task a config names, with its data loaded (and prepared once if needed)."""
    return {"ag_news": _ag_news_task, "needle": _needle_task, "wikitext": _wikitext_task,
            "mqar": _mqar_task}[cfg.task](cfg)
