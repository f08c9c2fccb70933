"""Reusable torch blocks shared by the families."""

from .conv import ConvDecoder28, ConvEncoder28
from .mlp import MLP
from .time_embedding import CoordinateFeatures, EpsMLP, TimeEmbedding, sinusoidal_embedding
from .unet import UNet

__all__ = ["MLP", "ConvEncoder28", "ConvDecoder28", "CoordinateFeatures", "EpsMLP", "TimeEmbedding", "UNet",
           "sinusoidal_embedding"]
