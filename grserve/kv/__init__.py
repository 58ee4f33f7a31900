"""KV caches and their bookkeeping, one subpackage per engine family (`gr/`, `llm/`)."""
