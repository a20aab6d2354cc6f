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
from scoring.training.text_vectors import RUN_VECTORS, TextVectors, encode


def encoder(model_dir: Path, settings: Settings) -> SentenceTransformer:
    """The run's (fine-tuned) encoder on the settings' device, in bfloat16 on a GPU: loaded once per
    process here, once per shard by the sharded scorer (scoring/spark/sharded.py)."""
    device = pick_device(settings.device)
    model = load_model(str(model_dir), device, settings.max_seq_length)
    if device.startswith("cuda"):
        model = model.to(dtype=torch.bfloat16)
    return model


def embed_run(run_dir: Path, settings: Settings) -> dict:
    """items.parquet -> item_embeddings.npy, users.parquet (user histories as of the scoring time) ->
    users_embeddings.npy and users_label.parquet (as of the label window's start) ->
    users_label_embeddings.npy, in the run folder."""
    model = encoder(run_dir / "model", settings)
    device = pick_device(settings.device)
    items = pd.read_parquet(run_dir / "items.parquet")
    start = time.perf_counter()
    # Fine-tuning measured its held-out recall on most item texts with this very model: those are read back.
    cache = TextVectors(run_dir / RUN_VECTORS)
    cached_items = cache.known(items["text"].tolist())
    item_vectors = cache.vectors(
        items["text"].tolist(), lambda texts: encode(model, texts, settings.embed_batch_size, "items")
    )
    item_seconds = time.perf_counter() - start
    np.save(run_dir / "item_embeddings.npy", item_vectors)
    record = {
        "device": device,
        "items": len(items),
        "dimension": int(item_vectors.shape[1]),
        "items_per_second": round(len(items) / item_seconds, 1) if item_seconds else None,
        "item_texts_cached": cached_items,
    }
    # A user who bought nothing in the label window has the same history text at both times: the label
    # window's histories reuse the vectors of the scoring time's, and only the others are encoded (on
    # Online Retail, 1,045 of 2,988). The scoring time's are encoded as one list, as a shard encodes its.
    now = pd.read_parquet(run_dir / "users.parquet")["query"]
    vectors = encode(model, now.tolist(), settings.embed_batch_size, "users")
    np.save(run_dir / "users_embeddings.npy", vectors)
    record["users"] = len(now)
    if (run_dir / "users_label.parquet").exists():
        then = pd.read_parquet(run_dir / "users_label.parquet")["query"]
        known = dict(zip(now, vectors, strict=True))
        new = [text for text in then.unique() if text not in known]
        if new:
            known.update(zip(new, encode(model, new, settings.embed_batch_size, "users_label"), strict=True))
        label_vectors = np.stack([known[text] for text in then]) if len(then) else vectors[:0]
        np.save(run_dir / "users_label_embeddings.npy", label_vectors)
        record["users_label"] = len(then)
        record["users_label_encoded"] = len(new)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description="Embed a run folder's items and users (GPU host friendly).")
    parser.add_argument("run_dir", type=Path)
    print(json.dumps(embed_run(parser.parse_args().run_dir, Settings())))


if __name__ == "__main__":
    main()
