"""The GR engine: requests queue, a fixed-step scheduler forms batches (deadline-aware admission, a fitted step
cost), the model runner computes each batch's whole beam search in one step."""
