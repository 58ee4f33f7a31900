"""Beam search over semantic IDs, restricted to the valid prefixes of the catalog's trie."""
