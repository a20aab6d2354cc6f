"""Fine-tune the BERT encoder as a two-tower retriever on purchase histories.

One shared encoder embeds the user's history text and the purchased item's text; the loss is
in-batch-negatives cross-entropy (MultipleNegativesRanking), so every other item of the batch is a
negative. In-batch negatives are drawn in proportion to popularity, which teaches the model to push
popular items down; the logQ correction (Yi et al., 2019) subtracts each item's log sampling
probability from its logits to undo that, and a negative that is the same item as the positive is
masked out. The step budget is bounded by settings. On CUDA it runs under bf16 autocast. It reads only
Parquet from the run folder, so it can run alone on a GPU host
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

SCALE = 20.0  # inverse temperature of the in-batch softmax, as in sentence-transformers' MNRL


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


def load_model(name_or_path: str, device: str, max_seq_length: int) -> SentenceTransformer:
    model = SentenceTransformer(name_or_path, device=device)
    model.max_seq_length = max_seq_length
    return model


def _embed(model: SentenceTransformer, texts: list[str]) -> torch.Tensor:
    features = model.preprocess(texts)
    features = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]


def finetune(pairs: pd.DataFrame, settings: Settings, out_dir: Path, log_every: int = 5) -> dict:
    """Train for at most `settings.finetune_steps` steps; save the checkpoint and its metrics."""
    torch.manual_seed(settings.seed)
    device = pick_device(settings.device)
    model = load_model(settings.resolved_model_name, device, settings.max_seq_length)
    steps = max(1, settings.finetune_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10))
    )
    rng = np.random.default_rng(settings.seed)
    use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    losses: list[tuple[int, float]] = []
    model.train()
    start = time.perf_counter()
    batch = settings.finetune_batch_size
    frequency = pairs["item_id"].map(pairs["item_id"].value_counts(normalize=True)).to_numpy()
    for step in tqdm(range(steps), desc="fine-tune", unit="step"):
        idx = rng.choice(len(pairs), size=min(batch, len(pairs)), replace=False)
        rows = pairs.iloc[idx]
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_bf16):
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
        "loss_first": first,
        "loss_last": last,
        "loss_first_quarter_mean": float(np.mean([v for _, v in losses[:window]])),
        "loss_last_quarter_mean": float(np.mean([v for _, v in losses[-window:]])),
        "loss_curve": losses,
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
