"""HTTP serving of GR models."""
