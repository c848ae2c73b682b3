"""msm4sr-bench: a benchmarking harness for multimodal sequential recommendation.

Python API (see bench.api): `bench.run(models=..., dataset=..., ...) -> Results` and
`bench.load(home).runs(...)`. Imported on first use, so `import bench` (and the CLI) stay light.
"""

__version__ = "0.1.0"

_API = ("run", "load", "Results", "Store")


def __getattr__(name: str):
    if name in _API:
        from bench import api

        return getattr(api, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
