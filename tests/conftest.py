"""Test setup. TRITON_INTERPRET must be set before any @triton.jit function is defined, so it is set here,
before pytest imports any test module (and so any speechmax.kernels module)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import shutil  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory):
    """A real synthesized utterance (espeak-ng), 16 kHz mono float32."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (Debian package espeak-ng; `make` installs it)")
    from speechmax.demo import speak_espeak
    from speechmax.features import load_audio

    path = tmp_path_factory.mktemp("speech") / "yes.wav"
    speak_espeak("yes, seven", path)
    return load_audio(path, 16000)
