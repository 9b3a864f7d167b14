"""The paper prior's 2-D decoder in the C++ kernel (speechmax.ops.decoder2d) against the torch module and
autograd. Its use in latent-mode ascent: tests/test_maximize.py
(test_paper_prior_runs_its_decoder_in_its_own_kernel_around_the_step_kernel)."""
import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

from speechmax.ops import available_backends
from speechmax.ops.backends import extension
from speechmax.ops.decoder2d import (decode2d, decode2d_ref, decode2d_vjp, decode2d_vjp_ref, decoder2d_unsupported,
                                     pack_decoder2d)
from speechmax.ops.kernel_params import to_struct

from test_maximize import inputs, rel_err, tiny_classifier, tiny_prior

needs_cpu = pytest.mark.skipif(not available_backends()["cpu"], reason="speechmax._C is not built")


def paper_prior(latent=16, seed=0):
    p = tiny_prior(arch="paper", latent=latent, seed=seed)
    with torch.no_grad():  # a de-normalisation that is not the identity, so the affine is tested too
        p.norm.mean.copy_(torch.linspace(-9, -3, p.cfg.n_mels))
        p.norm.std.copy_(torch.linspace(1.5, 3, p.cfg.n_mels))
    return p.eval()


def ref64_decode(prior, z, gf):
    """The torch module in float64 (the arbiter: in float32 a pre-activation within rounding of zero can
    take the other side of a ReLU in either implementation)."""
    p64 = copy.deepcopy(prior).double()
    return decode2d_ref(p64, z.double()), decode2d_vjp_ref(p64, z.double(), gf.double())


@needs_cpu
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("isa", ["avx2", "auto"])
@pytest.mark.parametrize("threads", [1, 2])
def test_decode_and_vjp_equal_the_torch_module(batch, isa, threads):
    prior = paper_prior()
    z, _ = inputs(prior, batch)
    z = z * 10  # latents of the size maximization reaches
    gf = torch.randn(batch, prior.cfg.n_mels, prior.cfg.n_frames)
    f, ctx = decode2d(prior, z, save=True, threads=threads, isa=isa)
    g = decode2d_vjp(prior, ctx, gf, threads=threads, isa=isa)
    f_ref, g_ref = ref64_decode(prior, z, gf)
    assert f.shape == f_ref.shape and g.shape == z.shape
    assert rel_err(f.double(), f_ref) < 1e-5
    assert rel_err(g.double(), g_ref) < 1e-4
    assert torch.equal(decode2d(prior, z, threads=threads, isa=isa), f)  # without saving: the same features
    # float32 against float32: the module as the engine runs it
    assert rel_err(f, decode2d_ref(prior, z)) < 1e-5


@needs_cpu
def test_shipped_paper_prior_decodes_alike():
    from speechmax.models.registry import load_model

    prior = load_model("prior-paper", kind="prior").eval()
    z = torch.randn(3, prior.cfg.latent)
    gf = torch.randn(3, prior.cfg.n_mels, prior.cfg.n_frames)
    f, ctx = decode2d(prior, z, save=True)
    f_ref, g_ref = ref64_decode(prior, z, gf)
    assert rel_err(f.double(), f_ref) < 1e-5
    assert rel_err(decode2d_vjp(prior, ctx, gf).double(), g_ref) < 1e-4


@needs_cpu
def test_pack_is_cached_until_the_weights_change():
    prior = paper_prior()
    a = pack_decoder2d(prior)
    assert pack_decoder2d(prior) is a
    with torch.no_grad():
        prior.net.dec[0].bias.add_(1.0)
    assert pack_decoder2d(prior) is not a
    z = torch.randn(2, prior.cfg.latent)
    assert rel_err(decode2d(prior, z), decode2d_ref(prior, z)) < 1e-5


def test_coverage_and_bad_input():
    assert decoder2d_unsupported(tiny_prior(arch="vae")) is not None
    assert decoder2d_unsupported(None) is not None
    assert decoder2d_unsupported(paper_prior()) is None
    odd = paper_prior()
    odd.net.dec[0] = nn.ConvTranspose2d(16, 20, 4, 2, 1)
    odd.net.dec[2] = nn.ConvTranspose2d(20, 16, 4, 2, 1)
    assert "multiples of 16" in decoder2d_unsupported(odd)
    strided = paper_prior()
    strided.net.dec[4] = nn.ConvTranspose2d(16, 1, 3, 2, 1)
    assert "kernel 4" in decoder2d_unsupported(strided)
    with pytest.raises(ValueError, match="does not cover"):
        pack_decoder2d(tiny_prior(arch="vae"))
    if not available_backends()["cpu"]:
        return
    prior = paper_prior()
    with pytest.raises(ValueError, match="latent must be"):
        decode2d(prior, torch.zeros(2, 3))
    _, ctx = decode2d(prior, torch.zeros(2, prior.cfg.latent), save=True)
    with pytest.raises(ValueError, match="gf must be"):
        decode2d_vjp(prior, ctx, torch.zeros(2, 3, 4))
    with pytest.raises(RuntimeError, match="unknown isa"):
        decode2d(prior, torch.zeros(2, prior.cfg.latent), isa="sse")
    p = pack_decoder2d(prior)
    h0, acts = ctx
    feats = torch.empty(2, prior.cfg.n_mels, prior.cfg.n_frames)
    params = to_struct(p.params)
    packed = dict(weights=p.weights, desc=p.desc, affine=p.affine)
    with pytest.raises(RuntimeError, match="1-channel output"):
        extension().decoder2d_forward(to_struct(replace(p.params, channels=p.params.channels[:-1])), h0=h0,
                                      feats=feats, **packed)
    with pytest.raises(RuntimeError, match="desc row"):
        extension().decoder2d_forward(params, weights=p.weights, desc=p.desc.flip(0).contiguous(), affine=p.affine,
                                      h0=h0, feats=feats)
    with pytest.raises(RuntimeError, match="h0 must hold"):
        extension().decoder2d_forward(params, h0=h0[:, :-1].contiguous(), feats=feats, **packed)
    with pytest.raises(RuntimeError, match="acts must hold"):
        extension().decoder2d_backward(params, h0=h0, acts=acts[:, 1:].contiguous(), gf=feats,
                                       g_h0=torch.empty_like(h0), **packed)
