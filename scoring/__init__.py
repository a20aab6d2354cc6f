"""Aisle's batch scorer: training data, fine-tuning, embedding, ranking, evaluation and publishing."""
