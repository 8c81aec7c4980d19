"""bendi (本地, "local"): run DeepSeek-class models on hardware you own."""

__version__ = "0.1.0"
