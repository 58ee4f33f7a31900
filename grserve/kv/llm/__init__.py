"""The LLM path's KV: the paged cache and its block manager, the decode mirror, and the transfer format.
Import the modules themselves: the router needs `block_manager`'s hashes without loading torch."""
