"""A FAISS inner-product index over normalised item embeddings.

Exact search (IndexFlatIP) while it is fast enough; above `ann_threshold` items an IVF index whose
nprobe is raised until recall@k against exact search reaches the target on a sample of queries. On a
host where faiss sees a GPU the index is moved there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np


@dataclass(frozen=True)
class IndexInfo:
    kind: str
    items: int
    gpu: bool
    nprobe: int | None = None
    recall_vs_exact: float | None = None


def _gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True))
    return hits / exact.size


def build(
    vectors: np.ndarray,
    ann_threshold: int,
    k: int = 100,
    target_recall: float = 0.98,
    seed: int = 0,
) -> tuple[faiss.Index, IndexInfo]:
    """An index over `vectors` (rows L2-normalised), exact or IVF by size."""
    n, dim = vectors.shape
    if n <= ann_threshold:
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        return index, IndexInfo("flat_ip", n, gpu=_gpu_count() > 0)
    nlist = int(4 * np.sqrt(n))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, size=min(1000, n), replace=False)]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(sample, k)
    recall = 0.0
    for nprobe in (8, 16, 32, 64, 128, 256, nlist):
        index.nprobe = min(nprobe, nlist)
        _, found = index.search(sample, k)
        recall = recall_at_k(found, truth)
        if recall >= target_recall:
            break
    return index, IndexInfo(
        "ivf_flat", n, gpu=_gpu_count() > 0, nprobe=index.nprobe, recall_vs_exact=round(recall, 4)
    )


def search(
    index: faiss.Index, queries: np.ndarray, k: int, batch: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, positions) for every query row, in batches to bound memory."""
    if _gpu_count() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    k = min(k, index.ntotal)
    scores, positions = [], []
    for start in range(0, len(queries), batch):
        s, p = index.search(np.ascontiguousarray(queries[start : start + batch]), k)
        scores.append(s)
        positions.append(p)
    return np.vstack(scores), np.vstack(positions)


def save(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))
