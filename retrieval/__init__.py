"""Candidate retrieval: a FAISS index over item embeddings and the other candidate sources."""
