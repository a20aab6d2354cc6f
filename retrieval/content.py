"""Title similarity: how a listed item nobody has bought yet reaches a shopper, and a ranking feature for
every candidate.

Collaborative sources (co-purchase, ALS, EASE, TIFU-KNN, repurchase, popularity) cannot score an item
before its first sale, and the encoder's nearest neighbours of a whole history rarely reach one: on Online
Retail's main cut, TF-IDF title similarity to the history ordered the new items of the test window twice
as well as Aisle's ranker did (NDCG@20 over new items 0.175 against 0.076, docs/evaluation.md). Two scores,
both dense (users x items), as TIFU-KNN's are:

- `history`: cosine between an item's TF-IDF vector (words and word pairs of its text, sublinear counts;
  scikit-learn's vectorizer, the reference implementation) and the user's history, the purchase-count
  weighted mean of their items' vectors;
- `transfer`: the user's purchase counts of each item's `neighbours` nearest items by title among the
  items sold before (an unsold item borrows its look-alikes' place in the user's history; a sold item,
  its look-alikes' other than itself).

The `content` candidate source proposes each user's best unsold items by `history`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize


def title_vectors(texts: np.ndarray) -> sp.csr_matrix:
    """Each item's L2-normalised TF-IDF vector over the catalogue's own texts."""
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform([str(text) for text in texts])


def history(counts: sp.csr_matrix, vectors: sp.csr_matrix) -> np.ndarray:
    """(users x items) cosine of each item with the user's count-weighted history; 0 without a history."""
    return np.asarray((normalize(counts @ vectors) @ vectors.T).todense(), dtype=np.float32)


def transfer(
    counts: sp.csr_matrix, vectors: sp.csr_matrix, sold: np.ndarray, neighbours: int, block: int = 2048
) -> np.ndarray:
    """(users x items) the user's purchase counts of each item's `neighbours` most title-similar sold
    items (itself excluded), weighted by that similarity. Items are taken `block` at a time, so memory
    grows with the catalogue, not with its square."""
    out = np.zeros((counts.shape[0], vectors.shape[0]), dtype=np.float32)
    sold_vectors, bought = vectors[sold], counts[:, sold]
    column = np.cumsum(sold) - 1  # a sold item's column among the sold items
    for start in range(0, vectors.shape[0], block):
        rows = np.arange(start, min(start + block, vectors.shape[0]))
        similarity = (vectors[rows] @ sold_vectors.T).toarray()
        own = sold[rows]
        similarity[np.flatnonzero(own), column[rows[own]]] = 0.0  # a sold item is no neighbour of itself
        keep = min(neighbours, similarity.shape[1])
        if keep < similarity.shape[1]:
            drop = np.argpartition(-similarity, keep, axis=1)[:, keep:]
            np.put_along_axis(similarity, drop, 0.0, axis=1)
        out[:, rows] = bought @ similarity.T
    return out
