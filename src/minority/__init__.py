"""Minority generation with diffusion models.

Minority guidance (Um, Lee, Ye, ICLR 2024), self-guided minority sampling (Um & Ye, ECCV 2024),
the baselines they compare with (ancestral DDPM, DDIM, Boost-and-Skip) and the metric suite.
"""

__version__ = "0.1.0"
