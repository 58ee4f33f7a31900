"""grserve's model: configuration, torch forward and HF-format checkpoint I/O for Llama and Qwen3."""

from grserve.model.config import ModelConfig
from grserve.model.loader import load_model, save_model
from grserve.model.transformer import Transformer

__all__ = ["ModelConfig", "Transformer", "load_model", "save_model"]
