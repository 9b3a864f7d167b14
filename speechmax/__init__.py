"""speechmax: debug speech classifiers by generating speech."""
__version__ = "0.1.0"

from .features import FeatureConfig, log_mel, load_audio, save_audio, mu_law_encode, mu_law_decode  # noqa: E402

__all__ = ["__version__", "FeatureConfig", "log_mel", "load_audio", "save_audio", "mu_law_encode", "mu_law_decode"]

__all__ += ["Vocoder"]


def __getattr__(name):
    # `speechmax.Vocoder` without importing the vocoder (and its kernels) on `import speechmax`.
    if name == "Vocoder":
        from .vocoder.vocoder import Vocoder

        return Vocoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
