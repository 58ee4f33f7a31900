"""Datasets, item embeddings, training and evaluation of GR models."""
