"""Test setup. TRITON_INTERPRET must be set before any @triton.jit function is defined, so it is set here,
before pytest imports any test module (and so any speechmax.kernels module)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import shutil  # noqa: E402
import subprocess  # noqa: E402

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


@pytest.fixture(scope="session")
def nvcc_compile(tmp_path_factory):
    """compile(cu, arch) -> the CompletedProcess of ``nvcc -arch=ARCH -std=c++17 -O3 -c CU`` (stderr as text).
    One compile per source and arch a session: test_gated compiles every csrc/cuda/*.cu and
    test_maximize_kernels maximize.cu again, ~9 s each. Skips when nvcc is not installed."""
    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    done = {}

    def compile(cu, arch):
        key = (str(cu), arch)
        if key not in done:
            obj = tmp_path_factory.mktemp("nvcc") / f"{cu.stem}-{arch}.o"
            done[key] = subprocess.run([nvcc, f"-arch={arch}", "-std=c++17", "-O3", "-c", str(cu), "-o", str(obj)],
                                       capture_output=True, text=True)
        return done[key]

    return compile
