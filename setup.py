"""Builds speechmax._C from csrc/ (C++ with OpenMP, portable AVX2/FMA baseline; wider ISA paths are
picked at run time) and installs kernels/ as speechmax.kernels. CUDA sources are built only where the
installed torch has CUDA; elsewhere the tests compile them with nvcc directly."""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch

cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-mavx2", "-mfma", "-fno-math-errno"]
sources = sorted(glob.glob("csrc/*.cpp"))
with_cuda = torch.version.cuda is not None and CUDA_HOME is not None and os.environ.get("SPEECHMAX_NO_CUDA") != "1"

if with_cuda:
    ext = CUDAExtension(
        "speechmax._C",
        sources + sorted(glob.glob("csrc/cuda/*.cpp")) + sorted(glob.glob("csrc/cuda/*.cu")),
        define_macros=[("SPEECHMAX_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]},
        extra_link_args=["-fopenmp"],
    )
else:
    ext = CppExtension("speechmax._C", sources, extra_compile_args={"cxx": cxx_flags}, extra_link_args=["-fopenmp"])

# Packages are discovered, never listed by hand (a hand list once left speechmax.cli and speechmax.assets out of
# the wheel while the editable install hid it); kernels/ sits at the top level and installs as speechmax.kernels.
packages = find_packages(include=["speechmax", "speechmax.*"])
packages += ["speechmax." + name for name in find_packages(include=["kernels", "kernels.*"])]

setup(
    packages=packages,
    package_dir={"speechmax.kernels": "kernels"},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
