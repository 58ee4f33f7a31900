"""The GR engine: requests queue, a fixed-step scheduler forms batches, the model runner computes them."""
