"""The fused ascent step in bf16 precision (issue 24): its instruction sets against their exact emulation, the
emulation against the float64 autograd reference (the quality check's gradient cosine, on tiny random models),
the weight layout, the engine and CLI plumbing, and bad input."""
import json
import subprocess
import sys

import pytest
import torch

from speechmax.maximize import maximize
from speechmax.ops import available_backends
from speechmax.ops.maximize import L2, Unit, ascent_step, bf16_isa, bf16_pairs, pack_maximizer

from test_maximize import SHAPES, inputs, one_thread, ref64, rel_err, tiny_classifier, tiny_prior  # noqa: F401

needs_cpu = pytest.mark.skipif(not available_backends()["cpu"], reason="speechmax._C is not built")


def isas():
    from speechmax.ops.backends import extension
    return extension().maximize_cpu_isas() if available_backends()["cpu"] else []


needs_emulation = pytest.mark.skipif("avx512bf16-emulated" not in isas(), reason="bf16 emulation needs AVX-512F")


def cosines(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1)


def bf16_step(clf, prior, x, t, isa, monkeypatch, **kw):
    monkeypatch.setenv("SPEECHMAX_BF16_ISA", isa)
    return ascent_step(clf, prior, x.clone(), t, update=False, return_grad=True, threads=2, precision="bf16", **kw)


@needs_cpu
def test_bf16_pairs_lays_out_input_pairs_per_output():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 37, 3, generator=g, dtype=torch.float64)   # cout 20 (coutp 32), cin 37 (padded to 64)
    flat = bf16_pairs(w, 32)
    assert flat.numel() == 3 * 64 * 32
    lay = flat.reshape(3, 32, 32, 2)                                  # tap, input pair, output, even/odd input
    for j, c, o in [(0, 0, 0), (2, 36, 19), (1, 13, 7), (1, 14, 7)]:
        assert lay[j, c // 2, o, c % 2] == w[o, c, j]
    unpacked = lay.permute(0, 1, 3, 2).reshape(3, 64, 32)             # tap, input, output
    assert torch.equal(unpacked[:, :37, :20], w.permute(2, 1, 0))
    assert (unpacked[:, 37:] == 0).all() and (unpacked[:, :, 20:] == 0).all()


@needs_cpu
@pytest.mark.parametrize("isa", ["avx512bf16", "amx"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["features", "latent"])
@pytest.mark.parametrize("batch", [1, 11])
def test_bf16_instruction_sets_equal_their_emulation(isa, shape, mode, batch, monkeypatch):
    if isa not in isas() or "avx512bf16-emulated" not in isas():
        pytest.skip(f"this CPU has no {isa}")
    clf = tiny_classifier(**SHAPES[shape]["clf"])
    prior = tiny_prior(**SHAPES[shape]["prior"]) if mode == "latent" else None
    x, t = inputs(prior, batch)
    for objective in ["prob", "logit", Unit("block1", 2)]:
        o_emu, g_emu = bf16_step(clf, prior, x, t, "avx512bf16-emulated", monkeypatch, objective=objective,
                                 regularizers=[L2(0.05)])
        o, g = bf16_step(clf, prior, x, t, isa, monkeypatch, objective=objective, regularizers=[L2(0.05)])
        # the same products in fp32; only the order of the sums differs (AMX adds a tile's 32 at a time), which
        # can move a later layer's input across a bf16 rounding boundary: one bf16 ulp is 2^-8
        torch.testing.assert_close(o, o_emu, rtol=1e-4, atol=1e-6)
        assert rel_err(g, g_emu) < 1e-3, (objective, rel_err(g, g_emu))


@needs_emulation
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["features", "latent"])
def test_bf16_gradient_is_close_to_the_float64_reference(shape, mode, monkeypatch):
    clf = tiny_classifier(**SHAPES[shape]["clf"])
    prior = tiny_prior(**SHAPES[shape]["prior"]) if mode == "latent" else None
    x, t = inputs(prior, 11)
    for objective in ["prob", "logit", Unit("stem", 1), Unit("pool", 3)]:
        o_ref, g_ref = ref64(clf, prior, x, t, objective=objective, regularizers=[L2(0.05)])
        o, g = bf16_step(clf, prior, x, t, "avx512bf16-emulated", monkeypatch, objective=objective,
                         regularizers=[L2(0.05)])
        c = cosines(g, g_ref)
        # bf16 keeps 8 bits of mantissa: gradients are near, not equal (issue 24's check is cosine >= 0.99)
        assert float(c.median()) >= 0.99 and float(c.min()) >= 0.95, (objective, c)
        assert float(cosines(g.reshape(1, -1), g_ref.reshape(1, -1))) >= 0.99
        assert ((o - o_ref).abs() <= 0.05 * o_ref.abs() + 0.02).all(), (objective, o, o_ref)
        if objective == "prob":   # it is bf16: were it equal to the reference, fp32 ran (a dead unit's gradient
            assert rel_err(g, g_ref) > 1e-6   # is the L2 penalty's alone, the same in both)


@needs_emulation
@pytest.mark.parametrize("mode", ["features", "latent"])
def test_bf16_steps_climb_like_fp32(mode, monkeypatch):
    monkeypatch.setenv("SPEECHMAX_BF16_ISA", "avx512bf16-emulated")
    clf, prior = tiny_classifier(), (tiny_prior() if mode == "latent" else None)
    x, t = inputs(prior, 6, seed=3)
    x32, x16 = x.clone(), x.clone()
    for _ in range(5):
        o32 = ascent_step(clf, prior, x32, t, lr=0.05)
        o16 = ascent_step(clf, prior, x16, t, lr=0.05, precision="bf16")
    assert rel_err(x16 - x, x32 - x) < 0.2   # 5 steps: the rounding's differences compound
    torch.testing.assert_close(o16, o32, rtol=0.05, atol=0.01)


@needs_emulation
def test_bf16_keeps_nan_a_stopped_start(monkeypatch):
    monkeypatch.setenv("SPEECHMAX_BF16_ISA", "avx512bf16-emulated")
    clf = tiny_classifier()
    x, t = inputs(None, 3)
    x[1, 5, 7] = float("nan")
    before = x.clone()
    o = ascent_step(clf, None, x, t, precision="bf16")
    assert torch.isnan(o[1]) and torch.isfinite(o[[0, 2]]).all()
    assert torch.equal(x[1].nan_to_num(), before[1].nan_to_num()) and not torch.equal(x[0], before[0])


@needs_cpu
def test_bf16_bad_input_is_a_clear_error(monkeypatch):
    clf, prior = tiny_classifier(), tiny_prior()
    x, t = inputs(prior, 2)
    with pytest.raises(ValueError, match="unknown precision"):
        ascent_step(clf, prior, x, t, precision="fp16")
    with pytest.raises(ValueError, match="cpu kernel only"):
        ascent_step(clf, prior, x, t, precision="bf16", backend="triton")
    monkeypatch.setenv("SPEECHMAX_BF16_ISA", "avx512")
    with pytest.raises(RuntimeError, match="unknown bf16 isa 'avx512'"):
        ascent_step(clf, prior, x, t, precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        maximize(clf, "yes", steps=1, precision="half")
    with pytest.raises(ValueError, match="fused cpu kernel"):
        maximize(clf, "yes", steps=1, precision="bf16", backend="autograd")
    res = maximize(clf, "yes", steps=1, precision="auto", backend="autograd")
    assert res.settings["precision"] == "fp32"


@needs_cpu
def test_engine_runs_and_records_bf16_where_the_cpu_has_it(monkeypatch):
    clf, prior = tiny_classifier(), tiny_prior()
    if bf16_isa() is None:
        with pytest.raises(ValueError, match="no bf16|does not have"):
            maximize(clf, "yes", mode="latent", prior=prior, n=2, steps=2, seed=0, precision="bf16")
        assert maximize(clf, "yes", n=1, steps=1, seed=0, precision="auto").settings["precision"] == "fp32"
        return
    r32 = maximize(clf, ["yes", "no"], mode="latent", prior=prior, n=4, steps=6, seed=0)
    r16 = maximize(clf, ["yes", "no"], mode="latent", prior=prior, n=4, steps=6, seed=0, precision="bf16")
    assert r16.settings["precision"] == "bf16" and r32.settings["precision"] == "fp32"
    assert maximize(clf, "yes", n=1, steps=1, seed=0, precision="auto").settings["precision"] == "bf16"
    assert not torch.equal(r16.latents, r32.latents)
    assert float(cosines(r16.latents - r16.latents_before, r32.latents - r32.latents_before).min()) > 0.9


@needs_cpu
def test_the_packing_carries_bf16_weights_for_every_matrix():
    clf, prior = tiny_classifier(), tiny_prior()
    p = pack_maximizer(clf, prior)
    assert p.bf16_weights.dtype == torch.bfloat16 and p.bf16_offsets.shape == (p.desc.shape[0],)
    assert (p.bf16_offsets.diff() > 0).all()


@needs_cpu
def test_cli_refuses_bf16_on_a_path_without_it_before_writing(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "speechmax", "maximize", "--target", "yes", "--starts", "1",
                        "--steps", "1", "--precision", "bf16", "--backend", "autograd", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--precision bf16" in r.stderr and "use --precision fp32" in r.stderr
    assert not out.exists()
