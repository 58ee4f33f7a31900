"""The GR decode rounds' KV: the separated (shared prompt + per-beam) cache and the expanded Hugging Face
layout kept as its ablation."""
