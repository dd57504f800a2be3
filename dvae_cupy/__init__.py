"""dvae_cupy: discrete VAE trained by direct optimization through arg max.

Lorberbom, Gane, Jaakkola, Hazan, "Direct Optimization through arg max for Discrete Variational
Auto-Encoder", NeurIPS 2019. See README.md; `DiscreteVAE` is the library entry point.
"""
from .api import DiscreteVAE

__all__ = ["DiscreteVAE"]
__version__ = "0.1.0"
