"""The LLM engine: continuous batching with chunked prefill over a paged KV cache, sampling, speculative
decoding, text beam search and prefix transfer for PD disaggregation."""
