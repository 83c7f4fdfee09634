"""calogan: fast calorimeter shower simulation with generative adversarial networks."""

__version__ = "0.1.0"

__all__ = ["__version__"]
