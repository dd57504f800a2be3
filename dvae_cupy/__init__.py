"""dvae_cupy: discrete VAE trained by direct optimization through arg max."""
