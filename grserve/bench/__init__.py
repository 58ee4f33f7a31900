"""Benchmarks of grserve's parts; each module times one thing and returns its numbers as a dict."""
