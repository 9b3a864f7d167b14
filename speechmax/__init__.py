"""speechmax: debug speech classifiers by generating speech."""
import importlib

__version__ = "0.1.0"

# The public names, loaded on first use (PEP 562). Not to dodge a cycle: importing the package must not import
# torch, so that `speechmax.listen` (the listening-test web app) runs on a machine without it.
_PUBLIC = {
    "FeatureConfig": "speechmax.features",
    "log_mel": "speechmax.features",
    "load_audio": "speechmax.features",
    "save_audio": "speechmax.features",
    "mu_law_encode": "speechmax.features",
    "mu_law_decode": "speechmax.features",
    "Vocoder": "speechmax.vocoder.vocoder",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)  # deferred: keeps torch off `import speechmax`
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
