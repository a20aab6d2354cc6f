"""Embed item and user texts with the (fine-tuned) encoder, L2-normalised for inner-product search.

It calls `SentenceTransformer.encode` directly with a fixed batch size, so throughput is the raw
encoder's; `make bench` compares the two. It reads only Parquet and a checkpoint, so it can run alone
on a GPU host (`python -m scoring.training.embed RUN_DIR`).
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

from scoring.settings import Settings
from scoring.training.finetune import load_model, pick_device


def encode(model: SentenceTransformer, texts: list[str], batch_size: int, label: str) -> np.ndarray:
    print(f"embedding {len(texts):,} {label}")
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=len(texts) > batch_size,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def encoder(model_dir: Path, settings: Settings) -> SentenceTransformer:
    """The run's (fine-tuned) encoder on the settings' device, in bfloat16 on a GPU: loaded once per
    process here, once per shard by the sharded scorer (scoring/spark/sharded.py)."""
    device = pick_device(settings.device)
    model = load_model(str(model_dir), device, settings.max_seq_length)
    if device.startswith("cuda"):
        model = model.to(dtype=torch.bfloat16)
    return model


def embed_run(run_dir: Path, settings: Settings) -> dict:
    """items.parquet -> item_embeddings.npy, and each users*.parquet (user histories as of the scoring
    time and as of the label window's start) -> users*_embeddings.npy, in the run folder."""
    model = encoder(run_dir / "model", settings)
    device = pick_device(settings.device)
    items = pd.read_parquet(run_dir / "items.parquet")
    start = time.perf_counter()
    item_vectors = encode(model, items["text"].tolist(), settings.embed_batch_size, "items")
    item_seconds = time.perf_counter() - start
    np.save(run_dir / "item_embeddings.npy", item_vectors)
    record = {
        "device": device,
        "items": len(items),
        "dimension": int(item_vectors.shape[1]),
        "items_per_second": round(len(items) / item_seconds, 1) if item_seconds else None,
    }
    for users_file in sorted(run_dir.glob("users*.parquet")):
        users = pd.read_parquet(users_file)
        vectors = encode(model, users["query"].tolist(), settings.embed_batch_size, users_file.stem)
        np.save(run_dir / f"{users_file.stem}_embeddings.npy", vectors)
        record[users_file.stem] = len(users)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description="Embed a run folder's items and users (GPU host friendly).")
    parser.add_argument("run_dir", type=Path)
    print(json.dumps(embed_run(parser.parse_args().run_dir, Settings())))


if __name__ == "__main__":
    main()
