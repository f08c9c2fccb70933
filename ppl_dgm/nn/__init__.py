"""Reusable torch blocks shared by the families."""

from .conv import ConvDecoder28, ConvEncoder28, ConvMapDecoder28, ConvMapEncoder28
from .flows import ConditionalFlowStack, FlowStack, autoregressive_flow, coupling_flow
from .masked import GatedBlock, GatedPixelCNN, MaskedConv2d, MaskedLinear, autoregressive_mask, free_parameters
from .mlp import MLP
from .quantize import Quantized, Usage, VectorQuantizer, usage_of
from .time_embedding import CoordinateFeatures, EpsMLP, TimeEmbedding, sinusoidal_embedding
from .unet import UNet

__all__ = ["MLP", "ConvEncoder28", "ConvDecoder28", "CoordinateFeatures", "EpsMLP", "TimeEmbedding", "UNet",
           "sinusoidal_embedding", "MaskedLinear", "MaskedConv2d", "GatedBlock", "GatedPixelCNN", "autoregressive_mask",
           "free_parameters", "ConvMapEncoder28", "ConvMapDecoder28", "VectorQuantizer", "Quantized", "Usage",
           "usage_of", "FlowStack", "ConditionalFlowStack", "coupling_flow", "autoregressive_flow"]
