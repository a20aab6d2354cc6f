"""The learned ranker over candidates and Feast features."""
