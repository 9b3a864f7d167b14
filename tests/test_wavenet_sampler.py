"""The fused WaveNet samplers against the reference, draw for draw: teacher-forced logits, free-running
sequences from the same uniforms, caller-owned state, configs off the beaten path, bad inputs."""
import threading
import time

import pytest
import torch

from speechmax.features import FeatureConfig
from speechmax.models.wavenet import WaveNet, WaveNetConfig
from speechmax.ops import BackendUnavailable
from speechmax.ops.wavenet import RingState, pack_wavenet, sample_wavenet, wavenet_backends, wavenet_update
from speechmax.ops.wavenet import WaveNetState, draw_from_logits, sample_wavenet_ref

RUNS = wavenet_backends()
TOL = {"cpu": 1e-4, "cpu-bf16": 2e-2, "triton": 1e-4, "cuda": 1e-4}
TINY = dict(residual_channels=8, gate_channels=16, skip_channels=16, out_channels=32, n_layers=3,
            dilation_cycle=2, cond_channels=8)
# Off the beaten path: channel counts that are not multiples of 16, an odd cond width (odd bf16 pair count),
# odd layer counts and dilation cycles, and the residual widths of the config family.
CONFIGS = {
    "tiny": TINY,
    "odd": dict(residual_channels=20, gate_channels=42, skip_channels=24, out_channels=40, n_classes=100, n_layers=5,
                dilation_cycle=3, cond_channels=13),
    "r32": dict(residual_channels=32, gate_channels=64, skip_channels=64, out_channels=64, n_layers=7, dilation_cycle=4,
                cond_channels=32),
    "r128": dict(residual_channels=128, gate_channels=256, skip_channels=128, out_channels=128, n_layers=2,
                 dilation_cycle=2, cond_channels=64),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The reference runs ~50 small torch ops a step; with two threads each can stall for milliseconds while
    the other core is busy (100x slower under load), so these tests give torch one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_model(seed=0, hop=160, **kw) -> WaveNet:
    """A random WaveNet; hop < 160 (with a matching FeatureConfig) gives few samples per frame, for Triton."""
    torch.manual_seed(seed)
    fc = FeatureConfig() if hop == 160 else FeatureConfig(hop_length=hop, win_length=4 * hop, n_fft=4 * hop)
    model = WaveNet(WaveNetConfig(**dict(kw, hop_length=hop)), fc).eval()
    with torch.no_grad():  # non-zero biases, and logits big enough that the softmax is not flat
        for name, p in model.named_parameters():
            if p.dim() == 1 or name.startswith("b_"):
                p.normal_(0, 0.3)
    return model


# The Triton interpreter runs ~40 ms a step for a 3-layer model, so its tests use a hop of 8 samples.
HOP = {"triton": 8}


def inputs(model, batch, frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, model.cfg.n_mels, frames, generator=g) - 4
    return mel, torch.rand(batch, (frames - 1) * model.cfg.hop_length, generator=g)


def need(backend):
    if not RUNS[backend]:
        pytest.skip(f"backend {backend} does not run here")


def bf16_rounded(model) -> WaveNet:
    """The model cpu-bf16 actually computes with: every packed matrix rounded to bf16 (biases, embedding fp32)."""
    out = WaveNet(model.cfg).eval()
    out.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name.startswith(("w_", "out1.weight", "out2.weight", "cond_proj.weight")):
                p.copy_(p.bfloat16().float())
    return out


def assert_same_draws(q, q_ref, logits_ref, u, temperature=1.0, window=1e-4):
    """Identical sequences, except that a sequence may part from the reference at a near-tie: a draw whose
    uniform lies within ``window`` of a boundary of the reference's CDF (after that the two histories differ)."""
    for b in range(q.shape[0]):
        diff = (q[b] != q_ref[b]).nonzero()
        if len(diff) == 0:
            continue
        t = int(diff[0])
        cdf = torch.cumsum(torch.softmax(logits_ref[b, t].float() / temperature, -1), -1)
        gap = (cdf - u[b, t]).abs().min().item()
        assert gap < window, f"item {b} parts from the reference at step {t} without a near-tie (gap {gap:.2e})"


def test_reference_logits_equal_forward():
    model = make_model(**TINY)
    mel, u = inputs(model, 2, 4)
    q, logits = sample_wavenet_ref(model, mel, u, return_logits=True)
    prev = torch.cat([torch.full((2, 1), model.cfg.n_classes // 2), q[:, :-1]], 1)
    forward = model(prev, mel).transpose(1, 2)
    torch.testing.assert_close(logits, forward, atol=1e-4, rtol=0)
    assert torch.equal(sample_wavenet_ref(model, mel, u), q)  # same uniforms, same samples


@pytest.mark.parametrize("isa", ["avx512", "avx2", "avx512bf16", "avx512bf16-emulated"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("backend", ["cpu", "cpu-bf16"])
def test_cpu_matches_reference(backend, config, isa, monkeypatch):
    need(backend)
    from speechmax import _C

    if isa not in _C.wavenet_cpu_isas():
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("SPEECHMAX_CPU_ISA", isa)
    model = make_model(**CONFIGS[config])
    mel, u = inputs(model, 3, 3)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    _, logits = sample_wavenet(model, mel, u, backend=backend, teacher=q_ref, return_logits=True)
    if backend == "cpu-bf16" and isa.startswith("avx512bf16"):
        # vdpbf16ps rounds the GEMM inputs to bf16 too: close to the fp32 model, not exact to anything simpler
        assert (logits - logits_ref).abs().max().item() <= TOL[backend]
        return
    if backend == "cpu-bf16":   # fp32 arithmetic on bf16 weights: exact to the reference on those weights
        assert (logits - logits_ref).abs().max().item() <= TOL[backend]
        target = bf16_rounded(model)
        q_ref, logits_ref = sample_wavenet_ref(target, mel, u, return_logits=True)
        _, logits = sample_wavenet(model, mel, u, backend=backend, teacher=q_ref, return_logits=True)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=0)
    assert_same_draws(sample_wavenet(model, mel, u, backend=backend), q_ref, logits_ref, u)


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
def test_cpu_gate_saturates_like_reference(isa, monkeypatch):
    """The vector gate (exp by polynomial, division by reciprocal estimate and a Newton step) where tanh and
    sigmoid saturate and the exponentials clamp: gate pre-activations of hundreds, both signs."""
    need("cpu")
    from speechmax import _C

    if isa not in _C.wavenet_cpu_isas():
        pytest.skip(f"this CPU has no {isa}")
    monkeypatch.setenv("SPEECHMAX_CPU_ISA", isa)
    model = make_model(**TINY)
    with torch.no_grad():
        for p in (model.w_past, model.w_cur, model.b_gate):
            p.mul_(300.0)
    mel, u = inputs(model, 5, 3)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    _, logits = sample_wavenet(model, mel, u, backend="cpu", teacher=q_ref, return_logits=True)
    torch.testing.assert_close(logits, logits_ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", ["cpu", "cpu-bf16", "triton", "cuda"])
@pytest.mark.parametrize("batch", [1, 3, 17])
def test_backend_matches_reference_over_batch(backend, batch):
    need(backend)
    if backend == "triton" and batch == 17:
        pytest.skip("the Triton interpreter is slow; batch 17 is covered on cpu")
    model = make_model(hop=HOP.get(backend, 160), **TINY)
    mel, u = inputs(model, batch, 3)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    _, logits = sample_wavenet(model, mel, u, backend=backend, teacher=q_ref, return_logits=True)
    assert (logits - logits_ref).abs().max().item() <= TOL[backend]
    q = sample_wavenet(model, mel, u, backend=backend)
    if backend != "cpu-bf16":
        assert_same_draws(q, q_ref, logits_ref, u)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
@pytest.mark.parametrize("temperature", [0.0, 0.6])
def test_temperature(backend, temperature):
    need(backend)
    model = make_model(hop=HOP.get(backend, 160), **TINY)
    mel, u = inputs(model, 2, 3)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, temperature, return_logits=True)
    q = sample_wavenet(model, mel, u, temperature, backend=backend)
    if temperature == 0:
        assert torch.equal(q, q_ref)
    else:
        assert_same_draws(q, q_ref, logits_ref, u, temperature)


def test_default_config_short():
    need("cpu")
    model = make_model()
    mel, u = inputs(model, 2, 3)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    for backend in ("cpu", "cpu-bf16"):
        _, logits = sample_wavenet(model, mel, u, backend=backend, teacher=q_ref, return_logits=True)
        assert (logits - logits_ref).abs().max().item() <= TOL[backend], backend
    assert_same_draws(sample_wavenet(model, mel, u, backend="cpu"), q_ref, logits_ref, u)


@pytest.mark.parametrize("backend", ["cpu", "cpu-bf16", "triton"])
def test_state_passing(backend):
    """Two half-length calls with the caller's state == one full call, exactly (same backend)."""
    need(backend)
    model = make_model(hop=HOP.get(backend, 160), **CONFIGS["odd"])
    batch = 1 if backend == "triton" else 3
    mel, u = inputs(model, batch, 4)
    feats = model.cond_net(mel).detach()
    full = RingState.zeros(model.cfg, batch)
    q_full = wavenet_update(model, feats, u, full, backend=backend)
    half = RingState.zeros(model.cfg, batch)
    k = u.shape[1] // 2 + 3  # not on a frame boundary
    q_a = wavenet_update(model, feats, u[:, :k], half, backend=backend)
    q_b = wavenet_update(model, feats, u[:, k:], half, backend=backend)
    assert torch.equal(torch.cat([q_a, q_b], 1), q_full)
    assert torch.equal(half.rings, full.rings) and torch.equal(half.prev, full.prev)
    assert half.step == full.step == u.shape[1]
    assert torch.equal(sample_wavenet(model, mel, u, backend=backend), q_full)   # same frame convention


def test_reference_state_round_trip():
    """A WaveNetState continues on the fused sampler exactly as on the reference (mel chunks, frames local)."""
    need("cpu")
    model = make_model(**TINY)
    mel, u = inputs(model, 2, 5)
    chunks = [(mel[:, :, :3], u[:, :320]), (mel[:, :, 2:], u[:, 320:])]
    s_ref, s_cpu = WaveNetState.zeros(model, 2), WaveNetState.zeros(model, 2)
    for m, uu in chunks:
        q_ref, l_ref = sample_wavenet_ref(model, m, uu, state=s_ref, return_logits=True)
        q = sample_wavenet(model, m, uu, backend="cpu", state=s_cpu)
        assert_same_draws(q, q_ref, l_ref, uu)
    assert s_cpu.step == s_ref.step == 640
    for a, b in zip(s_cpu.buffers, s_ref.buffers):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_threads_and_progress_do_not_change_results():
    need("cpu")
    model = make_model(**TINY)
    mel, u = inputs(model, 5, 202)   # 32,160 samples: two progress chunks and a bit
    one = sample_wavenet(model, mel, u, backend="cpu", threads=1)
    done = []
    two = sample_wavenet(model, mel, u, backend="cpu", threads=2, progress=done.append)
    assert torch.equal(one, two) and sum(done) == u.shape[1] and len(done) == 3


def test_gil_released():
    need("cpu")
    model = make_model(**TINY)
    mel, u = inputs(model, 1, 301)
    sample_wavenet(model, mel[:, :, :3], u[:, :320], backend="cpu")   # pack outside the timed part
    ticks, stop = [0], threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    sample_wavenet(model, mel, u, backend="cpu", threads=1)
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    assert ticks[0] >= min(5, elapsed / 0.004), f"the Python thread ticked {ticks[0]} times in {elapsed:.3f}s"


def test_pack_cache_follows_weight_updates():
    model = make_model(**TINY)
    a = pack_wavenet(model)
    assert pack_wavenet(model) is a
    with torch.no_grad():
        model.w_cur.add_(1.0)
    assert pack_wavenet(model) is not a


def test_bad_inputs():
    need("cpu")
    model = make_model(**TINY)
    mel, u = inputs(model, 2, 3)
    with pytest.raises(ValueError, match="n_mels=80"):
        sample_wavenet(model, torch.zeros(2, 64, 3), backend="cpu")
    with pytest.raises(ValueError, match="NaN or infinite"):
        sample_wavenet(model, torch.full((80, 3), float("nan")), backend="cpu")
    with pytest.raises(ValueError, match="at least 2 frames"):
        sample_wavenet(model, torch.zeros(80, 0), backend="cpu")
    with pytest.raises(ValueError, match="uniforms must be"):
        sample_wavenet(model, mel, u[:, :10], backend="cpu")
    with pytest.raises(ValueError, match="teacher classes"):
        sample_wavenet(model, mel, u, backend="cpu", teacher=torch.full(u.shape, 256))
    with pytest.raises(ValueError, match="state does not fit"):
        sample_wavenet(model, mel, u, backend="cpu", state=RingState.zeros(model.cfg, 3))
    with pytest.raises(BackendUnavailable, match="unknown vocoder backend 'tpu'"):
        sample_wavenet(model, mel, u, backend="tpu")
    if not RUNS["cuda"]:
        with pytest.raises(BackendUnavailable, match="not available on this machine; available: reference, cpu, cpu-bf16"):
            sample_wavenet(model, mel, u, backend="cuda")
    with pytest.raises(ValueError, match="features must be"):
        wavenet_update(model, torch.zeros(2, 5, 3), u, RingState.zeros(model.cfg, 2))


def test_other_feature_config_hop():
    """hop comes from the model's config, not a constant."""
    need("cpu")
    fc = FeatureConfig(hop_length=80, win_length=320, n_fft=512)
    torch.manual_seed(0)
    model = WaveNet(WaveNetConfig(**dict(TINY, hop_length=80)), fc).eval()
    mel, u = inputs(model, 2, 4)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    assert_same_draws(sample_wavenet(model, mel, u, backend="cpu"), q_ref, logits_ref, u)


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_cuda_sampler_compiles(arch, tmp_path):
    """csrc/cuda/wavenet.cu builds standalone with nvcc (no GPU or CUDA torch needed) and exports its launcher."""
    import shutil
    import subprocess
    from pathlib import Path

    nvcc = shutil.which("nvcc") or shutil.which("nvcc", path="/usr/local/cuda/bin")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    cu = Path(__file__).resolve().parents[1] / "csrc" / "cuda" / "wavenet.cu"
    obj = tmp_path / "wavenet.o"
    r = subprocess.run([nvcc, f"-arch={arch}", "-std=c++17", "-O3", "-c", str(cu), "-o", str(obj)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if shutil.which("nm"):
        symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True).stdout
        assert " T speechmax_wavenet_sample_cuda" in symbols


@pytest.mark.parametrize("backend", ["cpu", "cpu-bf16", "triton"])
def test_shipped_vocoder_on_every_backend(backend):
    """The shipped WaveNet itself (not only random configs): each fused backend's teacher-forced logits equal
    the reference's within the backend's tolerance, relative to the logits' scale (Triton, ~10^3x slower in
    the interpreter, on 4 samples; cpu-bf16, whose AVX512-BF16 path rounds the activations too, within 1% of
    the logits' range: 24 layers of bf16 rounding measured 0.066 on logits up to 26)."""
    need(backend)
    from speechmax.vocoder import Vocoder

    try:
        model = Vocoder.from_pretrained("default").model
    except FileNotFoundError:
        pytest.skip("the vocoder is not shipped in this version")
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(2, model.cfg.n_mels, 3, generator=g) - 6
    n = 4 if backend == "triton" else 2 * model.cfg.hop_length
    u = torch.rand(2, 2 * model.cfg.hop_length, generator=g)
    q_ref, logits_ref = sample_wavenet_ref(model, mel, u, return_logits=True)
    state = RingState.zeros(model.cfg, 2, torch.device("cpu"))
    _, logits = wavenet_update(model, model.cond_net(mel), u[:, :n], state, backend=backend, teacher=q_ref[:, :n],
                               return_logits=True)
    tol = 1e-2 * logits_ref.abs().max().item() if backend == "cpu-bf16" else TOL[backend] * max(1.0, logits_ref.abs().max().item() / 10)
    assert (logits - logits_ref[:, :n]).abs().max().item() <= tol
