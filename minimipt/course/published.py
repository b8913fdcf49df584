"""Numbers that are not results of this code: the paper's and independent baselines, labelled as such.

* :data:`PAPER`, :func:`paper_table`, :func:`paper_memory_series`: the numbers reported by the paper
  (arXiv 2604.07716 v1), *not reproduced here*, each table with its caveats.
* :data:`BASELINES`, :func:`baselines_table`: measurements made with an independent implementation
  (another code base) and published numbers of other models, for comparison only.

They are constants because they are quotations, not results of this code.
"""

from __future__ import annotations

__all__ = ["PAPER", "PAPER_LABEL", "BASELINES", "paper_table", "baselines_table", "paper_memory_series"]

PAPER_LABEL = "paper, arXiv 2604.07716 v1, not reproduced here"

#: The paper's numbers (v1, section 5 of the course's reading). Each table: columns, rows, notes.
PAPER: dict[str, dict] = {
    "ag_news": {
        "title": "AG News, N = 512, 3 seeds (accuracy)",
        "columns": ["model", "accuracy", "params"],
        "rows": [["MIPT", "0.905 ± 0.002", "248K"], ["Transformer", "0.736 ± 0.001", "422K"]],
        "notes": ["The protocol (train/test rows, tuning) is not stated; the \"+16.6%\" claimed matches neither "
                  "the 16.9-point gap nor the 23% relative gain.",
                  "A Transformer at 0.74 on AG News is badly under-tuned: an independent same-size Transformer "
                  "reached 0.820 on only 5,600 training rows (table below)."],
    },
    "needle": {
        "title": "Needle retrieval, N = 512, 4 classes, needle in the first 10%, 5,000 train / 1,000 test",
        "columns": ["model", "accuracy"],
        "rows": [["MIPT, no cache", "0.845"], ["MIPT, K = 1", "0.960"], ["MIPT, K = 4", "0.968"],
                 ["MIPT, K = 16", "0.992"], ["MIPT, unbounded cache", "1.0 of 512 slots used (99.8% sparse)"],
                 ["MIPT, threshold tuning alone", "0.750"], ["Transformer", "1.000"]],
        "notes": ["Accuracy is the *best test accuracy over epochs* (selected on the test set); ours is the "
                  "final model's accuracy on held-out sequences used for no choice. Picking the best of many "
                  "epochs on the test set biases the paper's numbers upward."],
    },
    "lm": {
        "title": "WikiText-103 language modelling (perplexity)",
        "columns": ["model", "perplexity"],
        "rows": [["MIPT, K = 0", "102.2"], ["MIPT, K = 16", "96.3"], ["MIPT, K = 64", "92.1"],
                 ["Transformer", "90.5"]],
        "notes": ["31M parameters (abstract) or 14M (the author's README); tokenizer BPE with V = 100,277.",
                  "Perplexities under different tokenizers, vocabularies or datasets are not comparable: ours is "
                  "per token of a 16,384-token BPE trained on WikiText-2, and per word."],
    },
    "memory": {
        "title": "Peak training memory against sequence length N (MB)",
        "columns": ["N", "MIPT", "Transformer"],
        "rows": [[512, 32, 71], [2048, 130, 589], [8192, 810, 34651], [16384, "~1,600", "OOM"]],
        "notes": ["The Transformer figures are those of *naive* (materialised) attention; batch size and width "
                  "are not stated."],
    },
    "throughput": {
        "title": "Training throughput, MIPT relative to the Transformer",
        "columns": ["N", "MIPT / Transformer"],
        "rows": [[128, 0.46], [512, 1.09], [2048, 1.67], [4096, 2.16]],
        "notes": ["Which attention the Transformer used is not stated; the author also says his scan is 3-5x "
                  "slower than optimised kernels."],
    },
}

#: Measurements made with an independent implementation (another code base, NVIDIA H200 / CPU) and
#: published numbers of other models, for comparison only.
BASELINES: dict[str, dict] = {
    "ag_news": {
        "title": "AG News offline protocol (5,600 train / 2,000 held-out rows of a stratified split of the "
                 "official test file), independent baselines",
        "columns": ["model", "accuracy"],
        "rows": [["TF-IDF (1-2-grams) + logistic regression, split seed 0 / 1 / 2", "0.8805 / 0.8645 / 0.8795"],
                 ["fastText-like bag of words + hashed bigrams, d = 64 (mean of 3 seeds, split seed 0)", "0.864"],
                 ["Transformer, d = 128, 2 layers, 4 heads, best of 3 learning rates (mean of 3 seeds)", "0.820"]],
        "notes": ["Their stratified split may differ in rows from ours (same sizes and stratification, another "
                  "sampler); their neural models cut documents at 128 tokens, ours at 512."],
    },
    "needle": {
        "title": "Needle, paper's setup (length 512, 4 classes, 15 epochs), an independent Transformer",
        "columns": ["model", "accuracy"],
        "rows": [["Transformer, 1 layer, d = 64, no cache, length 512", "1.000 (3 of 3 seeds)"],
                 ["same Transformer at length 2,048", "0.60 / 0.96 / 0.75 (3 seeds)"]],
        "notes": ["Recall at long range is not free for attention either when trained this briefly."],
    },
    "lm": {
        "title": "Published language-modelling references (other conditions)",
        "label": "published numbers of other models; not runs of minimipt",
        "columns": ["model", "dataset, tokenizer", "perplexity"],
        "rows": [["HGRN (Qin et al. 2023)", "WikiText-103, GPT-2 BPE", "24.14 valid / 24.82 test"],
                 ["Transformer-XL standard (151M)", "WikiText-103, word level", "24.0"],
                 ["AWD-LSTM (33M)", "WikiText-2, word level", "68.6 valid / 65.8 test"]],
        "notes": ["Never compare perplexities across tokenizers: only per-word perplexity on the same text is "
                  "comparable across vocabularies."],
    },
    "memory": {
        "title": "Peak training memory (MB) of a plain pre-LN Transformer, d = 128, 4 heads, 2 layers, fp32, "
                 "an independent measurement (H200)",
        "columns": ["batch, attention", "N = 512", "2,048", "8,192", "16,384"],
        "rows": [["B = 8, naive", 207, 2744, 41698, "OOM"], ["B = 8, SDPA", 77, 305, 1220, 2440]],
        "notes": ["fp32 there, bf16 autocast in our benchmark: absolute numbers differ, the shapes of the "
                  "curves (N² for naive, N for SDPA) do not."],
    },
}


def _table(spec: dict, label: str) -> str:
    lines = [f"**{spec['title']}** — *{label}*", "", "| " + " | ".join(spec["columns"]) + " |",
             "|" + "---|" * len(spec["columns"])]
    for row in spec["rows"]:
        lines.append("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in row) + " |")
    lines.append("")
    lines += [f"* {n}" for n in spec.get("notes", [])]
    return "\n".join(lines) + "\n"


def paper_table(name: str) -> str:
    """The paper's numbers for ``name`` (a key of :data:`PAPER`) as Markdown, labelled, with caveats."""
    if name not in PAPER:
        raise ValueError(f"name must be one of {sorted(PAPER)}, got {name!r}")
    return _table(PAPER[name], PAPER_LABEL)


def baselines_table(name: str) -> str:
    """Independent measurements and published numbers for ``name`` (a key of :data:`BASELINES`) as Markdown."""
    if name not in BASELINES:
        raise ValueError(f"name must be one of {sorted(BASELINES)}, got {name!r}")
    spec = BASELINES[name]
    return _table(spec, spec.get("label", "independent implementation (another code base), not runs of minimipt"))


def paper_memory_series() -> dict[str, dict[int, float]]:
    """The paper's peak-memory claims as plottable series ``label -> {N: MB}`` (OOM and "~" dropped:
    the 16K MIPT point is "~1.6 GB")."""
    cols = {1: "paper: MIPT", 2: "paper: Transformer (naive attention)"}
    out: dict[str, dict[int, float]] = {label: {} for label in cols.values()}
    for row in PAPER["memory"]["rows"]:
        for i, label in cols.items():
            v = row[i]
            if isinstance(v, str):
                if not v.startswith("~"):
                    continue
                v = float(v[1:].replace(",", ""))
            out[label][row[0]] = float(v)
    return out
