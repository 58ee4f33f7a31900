"""Per-request sampling: the parameters a request carries and the sampler that turns logits into tokens."""
from grserve.sampling.params import SamplingParams
from grserve.sampling.sampler import Sampler, make_generator

__all__ = ["Sampler", "SamplingParams", "make_generator"]
