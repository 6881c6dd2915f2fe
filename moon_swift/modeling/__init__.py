"""MOON model classes, registered with transformers' Auto classes on import."""

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_moon import MoonConfig
from .modeling_moon import MoonEmbeddingOutput, MoonModel, mean_pool
from .processing_moon import MoonProcessor

AutoConfig.register(MoonConfig.model_type, MoonConfig, exist_ok=True)
AutoModel.register(MoonConfig, MoonModel, exist_ok=True)
AutoProcessor.register(MoonConfig, MoonProcessor, exist_ok=True)

__all__ = ["MoonConfig", "MoonEmbeddingOutput", "MoonModel", "MoonProcessor", "mean_pool"]
