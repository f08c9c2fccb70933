"""Reusable torch blocks shared by the families."""

from .conv import ConvDecoder28, ConvEncoder28
from .mlp import MLP

__all__ = ["MLP", "ConvEncoder28", "ConvDecoder28"]
