"""Fine-tune the BERT encoder as a two-tower retriever, jointly for recommendation and search.

One shared encoder embeds the query side (a user's history text, or a normalised search query) and the
item's text; the loss is in-batch-negatives cross-entropy (MultipleNegativesRanking), so every other
item of the batch is a negative. Each batch mixes the two tasks in fixed proportion
(settings.finetune_search_share of search pairs, the rest recommendation pairs), so one model learns
both jobs and neither task's pair count crowds the other out. In-batch negatives are drawn in proportion
to popularity, which teaches the model to push popular items down; the logQ correction (Yi et al., 2019)
subtracts each item's log sampling probability (over the mixed batch) from its logits to undo that, and
a negative that is the same item as the positive is masked out.

Before training, a slice of each task's pairs is held out (settings.finetune_holdout_pairs, at most a
fifth); recall@10 of each held-out pair's item among the texts of every item in the pairs is measured
with the zero-shot encoder and again with the fine-tuned one, so a run shows what fine-tuning bought
each task. Held-out pairs are random, so a held-out search may repeat a query seen in training, as
tomorrow's searches repeat today's head queries. The texts' vectors are kept by text
(scoring/training/text_vectors.py): the base model's in the workspace, as they repeat every night, the
fine-tuned model's in the run folder, where the embed stage reads the item texts' back.

The step budget is bounded by settings. Steps run under bf16 autocast where the hardware multiplies bf16
natively (a CUDA GPU, or a CPU with AMX: 1.6x the steps per second on 2 cores), in fp32 elsewhere
(settings.finetune_bf16); the weights, the loss and the optimizer stay fp32. Embedding on a CPU stays
fp32: a bf16 vector would depend on which other texts share its padded batch far more than an fp32 one.
It reads only Parquet from the run folder, so it can run alone on a GPU host
(`python -m scoring.training.finetune RUN_DIR`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from tqdm import tqdm

from scoring.settings import Settings
from scoring.training.text_vectors import RUN_VECTORS, TextVectors, base_model_cache, encode

SCALE = 20.0  # inverse temperature of the in-batch softmax, as in sentence-transformers' MNRL
RECALL_K = 10
TASKS = ("recommend", "search")  # the `task` values of training pairs; pairs without one recommend


def in_batch_loss(queries: torch.Tensor, positives: torch.Tensor, item_ids: list[str], log_q: torch.Tensor):
    """Symmetric in-batch softmax loss with the logQ correction and same-item negatives masked."""
    scores = SCALE * queries.float() @ positives.float().T
    labels = torch.arange(len(item_ids), device=scores.device)
    codes = torch.as_tensor(pd.factorize(pd.Series(item_ids))[0], device=scores.device)
    same_item = (codes[:, None] == codes[None, :]) & ~torch.eye(
        len(item_ids), dtype=torch.bool, device=scores.device
    )
    scores = scores.masked_fill(same_item, float("-inf"))
    corrected = scores - log_q.to(scores.device)[None, :]
    return (
        torch.nn.functional.cross_entropy(corrected, labels)
        + torch.nn.functional.cross_entropy(scores.T, labels)
    ) / 2


def pick_device(requested: str) -> str:
    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_native(device: str) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a CUDA GPU with bf16, or a CPU with AMX tiles
    (Sapphire Rapids and later). Only there does bf16 autocast make training faster; on other CPUs torch
    emulates bf16 and a step is slower than in fp32."""
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return device == "cpu" and torch.cpu._is_amx_tile_supported()


def load_model(name_or_path: str, device: str, max_seq_length: int) -> SentenceTransformer:
    model = SentenceTransformer(name_or_path, device=device)
    model.max_seq_length = max_seq_length
    return model


def _embed(model: SentenceTransformer, texts: list[str]) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]


def _tasks(pairs: pd.DataFrame) -> pd.Series:
    """Each pair's task; pairs written before search existed have no column and are recommendation."""
    if "task" not in pairs:
        return pd.Series(TASKS[0], index=pairs.index)
    return pairs["task"].fillna(TASKS[0])


def _hold_out(pairs: pd.DataFrame, settings: Settings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Split off a random slice of each task's pairs for the before/after measure."""
    rng = np.random.default_rng(settings.seed + 1)
    task = _tasks(pairs)
    held: dict[str, pd.DataFrame] = {}
    keep = np.ones(len(pairs), dtype=bool)
    for name in TASKS:
        rows = np.flatnonzero((task == name).to_numpy())
        n = min(settings.finetune_holdout_pairs, len(rows) // 5)
        if n == 0:
            continue
        out = np.sort(rng.choice(rows, n, replace=False))
        keep[out] = False
        held[name] = pairs.iloc[out]
    return pairs[keep], held


def recall_at_k(
    model: SentenceTransformer,
    held: pd.DataFrame,
    catalogue: pd.DataFrame,
    batch_size: int,
    cache: TextVectors,
    k: int = RECALL_K,
) -> float:
    """Share of held-out pairs whose item is among the k catalogue texts closest to the query."""
    texts = [*catalogue["positive"], *held["query"]]  # one cache call: one write of the cache's files

    def compute(missing: list[str]) -> np.ndarray:
        return encode(model, missing, batch_size, "held-out texts")

    with torch.no_grad():
        vectors = torch.from_numpy(cache.vectors(texts, compute))
        items, queries = vectors[: len(catalogue)], vectors[len(catalogue) :]
        top = (queries @ items.T).topk(min(k, len(catalogue)), dim=1).indices.numpy()
    position = pd.Series(np.arange(len(catalogue)), index=catalogue["item_id"].to_numpy())
    target = position.loc[held["item_id"].to_numpy()].to_numpy()
    return float(np.mean([t in row for t, row in zip(target, top, strict=True)]))


def _measure(
    model: SentenceTransformer,
    held: dict[str, pd.DataFrame],
    catalogue: pd.DataFrame,
    settings: Settings,
    cache: TextVectors,
) -> dict[str, float]:
    """recall@k of each task's held-out pairs (encode puts the model in eval mode)."""
    return {t: recall_at_k(model, h, catalogue, settings.embed_batch_size, cache) for t, h in held.items()}


def _batch_plan(task: pd.Series, settings: Settings, batch: int) -> dict[str, int]:
    """How many pairs of each task one batch holds: the search share of the batch, when there are both."""
    present = [t for t in TASKS if (task == t).any()]
    if len(present) < 2:
        return {t: batch for t in present}
    search = round(settings.finetune_search_share * batch)
    if 0 < settings.finetune_search_share < 1:
        search = min(batch - 1, max(1, search))  # a share strictly between: both tasks in every batch
    return {t: n for t, n in (("recommend", batch - search), ("search", search)) if n > 0}


def finetune(pairs: pd.DataFrame, settings: Settings, out_dir: Path, log_every: int = 5) -> dict:
    """Train for at most `settings.finetune_steps` steps; save the checkpoint and its metrics."""
    torch.manual_seed(settings.seed)
    device = pick_device(settings.device)
    model = load_model(settings.resolved_model_name, device, settings.max_seq_length)
    steps = max(1, settings.finetune_steps)
    catalogue = pairs.drop_duplicates("item_id")[["item_id", "positive"]].reset_index(drop=True)
    train, held = _hold_out(pairs, settings)
    # The base model's vectors of these texts, from the workspace's cache after the first night.
    base = base_model_cache(
        settings.data_dir / "cache", settings.resolved_model_name, settings.max_seq_length
    )
    before = _measure(model, held, catalogue, settings, base)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10))
    )
    rng = np.random.default_rng(settings.seed)
    use_bf16 = settings.finetune_bf16 == "auto" and bf16_native(device)
    losses: list[tuple[int, float]] = []
    model.train()
    start = time.perf_counter()
    batch = settings.finetune_batch_size
    task = _tasks(train)
    plan = _batch_plan(task, settings, batch)
    rows_of = {t: np.flatnonzero((task == t).to_numpy()) for t in plan}
    # The chance that a batch slot holds each item, over the mixed batch: the logQ correction's q.
    share = {t: n / sum(plan.values()) for t, n in plan.items()}
    frequency = np.zeros(len(train))
    for t, rows in rows_of.items():
        items = train["item_id"].iloc[rows]
        frequency += share[t] * train["item_id"].map(items.value_counts(normalize=True)).fillna(0).to_numpy()
    for step in tqdm(range(steps), desc="fine-tune", unit="step"):
        idx = np.concatenate(
            [rng.choice(rows_of[t], size=min(n, len(rows_of[t])), replace=False) for t, n in plan.items()]
        )
        rows = train.iloc[idx]
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=use_bf16):
            queries = _embed(model, rows["query"].tolist())
            positives = _embed(model, rows["positive"].tolist())
            log_q = torch.log(torch.as_tensor(frequency[idx], dtype=torch.float32))
            loss = in_batch_loss(queries, positives, rows["item_id"].tolist(), log_q)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append((step, float(loss.detach())))
    seconds = time.perf_counter() - start
    model.eval()
    # The fine-tuned model's vectors of the item texts, which the embed stage then reads from the run folder.
    tuned = TextVectors(out_dir.parent / RUN_VECTORS)
    tuned.clear()
    after = _measure(model, held, catalogue, settings, tuned)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    first, last = losses[0][1], losses[-1][1]
    window = max(1, len(losses) // 4)
    metrics = {
        "device": device,
        "bf16": use_bf16,
        "steps": steps,
        "batch_size": batch,
        "pairs": len(pairs),
        "pairs_by_task": {t: int(n) for t, n in _tasks(pairs).value_counts().sort_index().items()},
        "batch_by_task": plan,
        "loss_first": first,
        "loss_last": last,
        "loss_first_quarter_mean": float(np.mean([v for _, v in losses[:window]])),
        "loss_last_quarter_mean": float(np.mean([v for _, v in losses[-window:]])),
        "loss_curve": losses,
        "held_out": {
            t: {
                "pairs": len(held[t]),
                "candidates": len(catalogue),
                f"recall_at_{RECALL_K}_zero_shot": round(before[t], 4),
                f"recall_at_{RECALL_K}_fine_tuned": round(after[t], 4),
            }
            for t in held
        },
        "seconds": round(seconds, 2),
        "pairs_per_second": round(steps * batch / seconds, 1) if seconds else None,
        "base_model": settings.resolved_model_name,
    }
    (out_dir / "finetune_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Fine-tune from a run folder's pairs.parquet (GPU host friendly)."
    )
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    pairs = pd.read_parquet(args.run_dir / "pairs.parquet")
    print(
        json.dumps(
            {
                k: v
                for k, v in finetune(pairs, Settings(), args.run_dir / "model").items()
                if k != "loss_curve"
            }
        )
    )


if __name__ == "__main__":
    main()
