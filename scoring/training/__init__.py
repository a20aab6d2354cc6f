"""The BERT encoder: training pairs from Feast, fine-tuning, and embedding items and user histories."""
