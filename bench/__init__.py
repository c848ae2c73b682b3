"""msm4sr-bench: a benchmarking harness for multimodal sequential recommendation."""

__version__ = "0.1.0"
