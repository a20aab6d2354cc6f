"""Query-tower fine-tuning for the search evaluation: the bundled encoder learns queries -> titles against
the whole catalogue, with the item side frozen.

Why not the pipeline's symmetric fine-tuning (scoring/training/finetune.py) here: on Home Depot the
catalogue has 54,667 titles, and on the two shared CPU cores the evaluation runs on, one symmetric step
(32 queries and 32 titles through the encoder, forward and backward) takes about 1.5 s and re-embedding
the catalogue afterwards about 7 minutes, twice the whole evaluation's budget. Freezing the item tower at
the base encoder keeps the catalogue's (cached) zero-shot embeddings valid, so only short queries go
through the encoder; and because the item vectors are fixed, every step can use the full softmax over the
whole catalogue instead of in-batch negatives, which is the exact retrieval task the evaluation measures.
The query encoder starts from the same bundled all-MiniLM-L6-v2 and is a normal SentenceTransformer, so
everything downstream (FAISS, the hybrid retriever, the ranker) is unchanged. (The nightly job's
`make score` keeps the symmetric, joint fine-tuning: its catalogues are small enough to re-embed.)
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from tqdm import tqdm

from scoring.settings import Settings
from scoring.training.finetune import SCALE, _embed, load_model, pick_device


def finetune_query_tower(
    pairs: pd.DataFrame,
    item_vectors: np.ndarray,
    settings: Settings,
    steps: int,
    batch_size: int,
    log_every: int = 10,
) -> tuple[SentenceTransformer, dict]:
    """Train the query encoder on `pairs` (query, item_row: the positive's row in `item_vectors`).

    Loss: cross-entropy of the positive among every catalogue item (SCALE * cosine logits), with the
    query's other positives masked so that they are not pushed away."""
    torch.manual_seed(settings.seed)
    device = pick_device(settings.device)
    model = load_model(settings.resolved_model_name, device, settings.max_seq_length)
    items = torch.as_tensor(np.ascontiguousarray(item_vectors), dtype=torch.float32, device=device)
    positives_of = pairs.groupby("query")["item_row"].agg(list).to_dict()
    # The token embeddings stay frozen: they are half the encoder's weights (30,522 x 384) and most of a
    # CPU step's optimizer time, and the few thousand training queries touch few of their rows anyway.
    for name, parameter in model.named_parameters():
        if "embeddings" in name:
            parameter.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, foreach=True)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / max(1, steps - warmup))
    )
    rng = np.random.default_rng(settings.seed)
    batch = min(batch_size, len(pairs))
    losses: list[tuple[int, float]] = []
    model.train()
    start = time.perf_counter()
    for step in tqdm(range(max(1, steps)), desc="fine-tune query tower", unit="step"):
        rows = pairs.iloc[rng.choice(len(pairs), size=batch, replace=False)]
        queries = torch.nn.functional.normalize(_embed(model, rows["query"].tolist()), dim=-1)
        logits = SCALE * queries @ items.T
        targets = torch.as_tensor(rows["item_row"].to_numpy(), device=device)
        mask = torch.zeros_like(logits, dtype=torch.bool)
        for i, (query, target) in enumerate(zip(rows["query"], rows["item_row"], strict=True)):
            others = [r for r in positives_of[query] if r != target]
            if others:
                mask[i, others] = True
        loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, float("-inf")), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimizer.step()
        scheduler.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append((step, float(loss.detach())))
    model.eval()
    seconds = time.perf_counter() - start
    window = max(1, len(losses) // 4)
    return model, {
        "mode": "query_tower",
        "device": device,
        "steps": max(1, steps),
        "batch_size": batch,
        "pairs": int(len(pairs)),
        "queries": int(pairs["query"].nunique()),
        "learning_rate": settings.learning_rate,
        "trained_parameters": int(sum(p.numel() for p in trained)),
        "loss_first_quarter_mean": round(float(np.mean([v for _, v in losses[:window]])), 4),
        "loss_last_quarter_mean": round(float(np.mean([v for _, v in losses[-window:]])), 4),
        "loss_curve": losses,
        "seconds": round(seconds, 1),
        "base_model": settings.resolved_model_name,
    }
