"""Vectors by text for one encoder: a text embedded once is not embedded again.

Embedding is a large share of a night on CPU, and much of it repeats: fine-tuning measures its held-out
recall against the texts of every item in the pairs with the base model, the same texts night after
night, and again with the fine-tuned model just before the embed stage encodes those very item texts
with it. A `TextVectors` folder holds one encoder's L2-normalised vectors keyed by a digest of the text,
so each of those is computed once: the base model's in the workspace (data/cache/text_vectors/<key>,
`base_model_cache`), a run's fine-tuned model's in its run folder (`RUN_VECTORS`).

`encode` is the one call that turns texts into vectors (every caller above, and the evaluations, use it);
it lives here, below fine-tuning and the embed stage, so both can call it.

A cache belongs to one encoder: the key of the base model's folder digests its name or path, the size and
time of every file of a local model folder, and the sequence length texts are cut at, so another model
or cut never reads it. A run's own folder is written by its fine-tuning stage, which empties it first.
A vector read from the cache was computed in another batch than a fresh one would be; the two differ
by float rounding only (padding is masked), far below what any list compares (retrieval/ordering.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

RUN_VECTORS = "text_vectors"  # the run folder's cache of its fine-tuned model's vectors


def encode(model: SentenceTransformer, texts: list[str], batch_size: int, label: str) -> np.ndarray:
    """The one way Aisle turns texts into vectors (L2-normalised float32, one row per text), with a
    progress bar for long lists: the embed stage, fine-tuning's held-out measure, updates, the Spark
    shards and the evaluations all call it, so their vectors agree."""
    print(f"embedding {len(texts):,} {label}")
    vectors = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=len(texts) > batch_size,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


class TextVectors:
    """One encoder's vectors by text digest, in `folder` (keys.npy, vectors.npy; replaced atomically)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._keys: dict[bytes, int] = {}
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        if (folder / "keys.npy").exists() and (folder / "vectors.npy").exists():
            keys = np.load(folder / "keys.npy")
            self._vectors = np.load(folder / "vectors.npy")
            if len(keys) == len(self._vectors):
                # numpy's S16 drops a digest's trailing zero bytes on the way back: pad them again.
                self._keys = {bytes(key).ljust(16, b"\0"): row for row, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._keys)

    def known(self, texts: list[str]) -> int:
        """How many of `texts` the cache holds."""
        return sum(_digest(text) in self._keys for text in texts)

    def vectors(
        self, texts: list[str], compute: Callable[[list[str]], np.ndarray], keep: bool = True
    ) -> np.ndarray:
        """Each text's vector, in order: from the cache, or from `compute` for the distinct texts it
        lacks (which are then kept, unless `keep` is False: a reader that shares the folder with others,
        such as a Spark shard)."""
        digests = [_digest(text) for text in texts]
        missing = {d: text for d, text in zip(digests, texts, strict=True) if d not in self._keys}
        if missing:
            fresh = np.asarray(compute(list(missing.values())), dtype=np.float32)
            start = len(self._keys)
            old = self._vectors if len(self._vectors) else np.zeros((0, fresh.shape[1]), dtype=np.float32)
            self._vectors = np.concatenate([old, fresh])
            self._keys.update({d: start + i for i, d in enumerate(missing)})
            if keep:
                self._save()
        if not texts:
            return np.zeros((0, self._vectors.shape[1] if self._vectors.ndim == 2 else 0), dtype=np.float32)
        return self._vectors[[self._keys[d] for d in digests]]

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self._keys), dtype="S16")
        for name, array in (("keys", keys), ("vectors", self._vectors)):
            tmp = self.folder / f"{name}.tmp.npy"
            np.save(tmp, array)
            os.replace(tmp, self.folder / f"{name}.npy")

    def clear(self) -> None:
        """Forget every vector (a new model is about to write here)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._keys, self._vectors = {}, np.zeros((0, 0), dtype=np.float32)


def base_model_cache(cache_root: Path, model_name: str, max_seq_length: int) -> TextVectors:
    """The workspace's cache of the base (not fine-tuned) model's vectors, under a key of the model and
    the length texts are cut at."""
    identity = [model_name, str(max_seq_length)]
    path = Path(model_name)
    if path.is_dir():
        for file in sorted(path.rglob("*")):
            if file.is_file():
                stat = file.stat()
                identity.append(f"{file.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:16]
    return TextVectors(cache_root / "text_vectors" / key)
