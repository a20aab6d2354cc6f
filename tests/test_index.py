import numpy as np

from retrieval import index as faiss_index


def _unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_index_finds_each_vector_first() -> None:
    vectors = _unit_vectors(500, 32)
    index, info = faiss_index.build(vectors, ann_threshold=10_000)
    assert info.kind == "flat_ip" and info.items == 500
    scores, positions = faiss_index.search(index, vectors[:50], k=5)
    assert (positions[:, 0] == np.arange(50)).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivf_index_is_used_above_the_threshold_and_tuned_to_target_recall() -> None:
    vectors = _unit_vectors(20_000, 16, seed=1)
    index, info = faiss_index.build(vectors, ann_threshold=1_000, k=20, target_recall=0.98)
    assert info.kind == "ivf_flat"
    assert info.recall_vs_exact is not None and info.recall_vs_exact >= 0.98
    queries = _unit_vectors(200, 16, seed=2)
    exact, _ = faiss_index.build(vectors, ann_threshold=10**9)
    _, truth = faiss_index.search(exact, queries, 20)
    _, found = faiss_index.search(index, queries, 20)
    assert faiss_index.recall_at_k(found, truth) >= 0.95


def test_index_round_trips_through_a_file(tmp_path) -> None:
    vectors = _unit_vectors(100, 8)
    index, _ = faiss_index.build(vectors, ann_threshold=1_000)
    faiss_index.save(index, tmp_path / "items.faiss")
    loaded = faiss_index.load(tmp_path / "items.faiss")
    assert loaded.ntotal == 100
    assert (faiss_index.search(loaded, vectors[:3], 1)[1].ravel() == [0, 1, 2]).all()


def test_k_larger_than_the_catalogue_is_capped() -> None:
    index, _ = faiss_index.build(_unit_vectors(5, 4), ann_threshold=100)
    scores, positions = faiss_index.search(index, _unit_vectors(2, 4, seed=3), k=50)
    assert positions.shape == (2, 5) and (positions >= 0).all()
