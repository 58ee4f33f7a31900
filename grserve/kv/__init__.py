"""KV caches and their bookkeeping: the GR decode rounds' separated (shared prompt + per-beam) cache and the
expanded Hugging Face layout kept as its ablation; the LLM path's paged cache, block manager and transfer format.
Import the modules themselves: the router needs `block_manager`'s hashes without loading torch."""
