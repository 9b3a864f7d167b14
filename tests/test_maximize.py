"""Activation maximization: the fused step against autograd, and the engine (paper preset, hidden units,
class-to-class, determinism, fallbacks, bad input). Tiny random models throughout."""
import copy
import dataclasses

import pytest
import torch

from speechmax.data.words import WORDS
from speechmax.features import FeatureConfig, FeatureMismatchError
from speechmax.maximize import L2, Clamp, Jitter, TotalVariation, Unit, maximize
from speechmax.maximize.engine import merge_results, _ascend
from speechmax.models.classifier import Classifier, ClassifierConfig
from speechmax.models.prior import Prior, PriorConfig
from speechmax.ops import available_backends
from speechmax.ops.maximize import (AdamState, FusedUnsupported, ascent_step, ascent_step_ref, fused_unsupported,
                                    pack_maximizer)

needs_cpu = pytest.mark.skipif(not available_backends()["cpu"], reason="speechmax._C is not built")


@pytest.fixture(autouse=True)
def one_thread():
    # Small autograd ops with 2 threads stall for up to a second here when the other core is busy.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def randomize(model, seed):
    """Random batch-norm statistics and input normalisation, so folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            n = mod.num_features
            mod.running_mean.copy_(0.3 * torch.randn(n, generator=g))
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
            mod.weight.data.copy_(0.5 + torch.rand(n, generator=g))
            mod.bias.data.copy_(0.2 * torch.randn(n, generator=g))
    model.norm.mean.copy_(-4 + torch.randn(model.cfg.n_mels, generator=g))
    model.norm.std.copy_(0.5 + 1.5 * torch.rand(model.cfg.n_mels, generator=g))
    return model.eval()


def tiny_classifier(channels=(12, 20, 20), kernel=3, seed=0, arch="tcres"):
    torch.manual_seed(seed)
    return randomize(Classifier(ClassifierConfig(arch=arch, channels=channels, kernel=kernel, labels=WORDS)), seed)


def tiny_prior(latent=10, channels=20, base_frames=26, kernel=5, seed=0, arch="vae"):
    torch.manual_seed(seed + 100)
    return randomize(Prior(PriorConfig(arch=arch, latent=latent, channels=channels, base_frames=base_frames,
                                       kernel=kernel)), seed + 100)


def rel_err(a, b):
    """Per-sample relative error ||a - b|| / ||b||, the worst sample."""
    num = (a - b).flatten(1).norm(dim=1)
    den = b.flatten(1).norm(dim=1).clamp_min(1e-30)
    return float((num / den).max())


def ref64(clf, prior, x, t, **kw):
    """The autograd reference in float64: the arbiter, since in float32 a pre-activation within rounding of
    zero can take the other side of a ReLU in either implementation (seen: 2.6e-3 off on 1 sample of 9)."""
    c64 = copy.deepcopy(clf).double()
    p64 = copy.deepcopy(prior).double() if prior is not None else None
    o, g = ascent_step_ref(c64, p64, x.double(), t, update=False, return_grad=True, **kw)
    return o.float(), g.float()


def inputs(prior, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, prior.cfg.latent, generator=g) if prior is not None else \
        -4 + 2 * torch.randn(batch, 80, 101, generator=g)
    return x, torch.randint(0, 35, (batch,), generator=g)


SHAPES = {  # classifier channels, kernel; prior latent, channels, base_frames, kernel
    "odd-widths": dict(clf=dict(channels=(12, 20, 20), kernel=3), prior=dict(latent=10, channels=20, kernel=3)),
    "proj-k9": dict(clf=dict(channels=(16, 16, 24), kernel=9), prior=dict(latent=17, channels=36, base_frames=27, kernel=9)),
    "k7": dict(clf=dict(channels=(8, 8), kernel=7), prior=dict(latent=5, channels=12, kernel=7)),
}
OBJECTIVES = ["prob", "logit", Unit("stem", 1), Unit("block1", 2), Unit("pool", 3), Unit("logits", 4)]


@needs_cpu
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["features", "latent"])
@pytest.mark.parametrize("batch", [1, 11])
@pytest.mark.parametrize("isa", ["avx2", "auto"])
@pytest.mark.parametrize("winograd", ["0", "1"])
def test_fused_gradient_equals_autograd(shape, mode, batch, isa, winograd, monkeypatch):
    monkeypatch.setenv("SPEECHMAX_CPU_ISA", isa)
    monkeypatch.setenv("SPEECHMAX_MAXIMIZE_WINOGRAD", winograd)
    clf = tiny_classifier(**SHAPES[shape]["clf"])
    prior = tiny_prior(**SHAPES[shape]["prior"]) if mode == "latent" else None
    x, t = inputs(prior, batch)
    for objective in OBJECTIVES:
        o_ref, g_ref = ref64(clf, prior, x, t, objective=objective, regularizers=[L2(0.05)])
        o, g = ascent_step(clf, prior, x.clone(), t, objective=objective, update=False, return_grad=True,
                           regularizers=[L2(0.05)], threads=2)
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-6)
        assert rel_err(g, g_ref) < 1e-4, (objective, rel_err(g, g_ref))


@needs_cpu
@pytest.mark.parametrize("mode", ["features", "latent"])
@pytest.mark.parametrize("winograd", ["0", "1"])
def test_fused_gradient_at_shipped_shapes(mode, winograd, monkeypatch):
    monkeypatch.setenv("SPEECHMAX_MAXIMIZE_WINOGRAD", winograd)
    from speechmax.models.classifier import PRESETS as CP
    from speechmax.models.prior import PRESETS as PP

    torch.manual_seed(0)
    clf = randomize(Classifier(CP["classifier"]), 0)
    prior = randomize(Prior(PP["prior"]), 1) if mode == "latent" else None
    x, t = inputs(prior, 9)
    o_ref, g_ref = ref64(clf, prior, x, t)
    o, g = ascent_step(clf, prior, x.clone(), t, update=False, return_grad=True)
    torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-7)
    assert rel_err(g, g_ref) < 1e-4


@needs_cpu
@pytest.mark.parametrize("mode", ["features", "latent"])
@pytest.mark.parametrize("optimizer", ["rms-normalized", "adam"])
def test_fused_update_equals_reference(mode, optimizer):
    clf, prior = tiny_classifier(), (tiny_prior() if mode == "latent" else None)
    x, t = inputs(prior, 6, seed=3)
    regs = [L2(0.1)] + ([Clamp()] if mode == "features" else [])
    x_ref, x_fused = x.clone(), x.clone()
    s_ref = AdamState.zeros_like(x) if optimizer == "adam" else None
    s_fused = AdamState.zeros_like(x) if optimizer == "adam" else None
    for _ in range(4):
        o_ref = ascent_step_ref(clf, prior, x_ref, t, optimizer=optimizer, lr=0.05, state=s_ref, regularizers=regs)
        o = ascent_step(clf, prior, x_fused, t, optimizer=optimizer, lr=0.05, state=s_fused, regularizers=regs)
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-6)
    assert rel_err(x_fused - x, x_ref - x) < 1e-4
    if optimizer == "adam":
        assert s_ref.step == s_fused.step == 4
        assert rel_err(s_fused.m, s_ref.m) < 1e-4


@needs_cpu
def test_fused_threads_and_batch_split_give_identical_results():
    clf, prior = tiny_classifier(), tiny_prior()
    x, t = inputs(prior, 19)
    outs = []
    for threads in (1, 2):
        xs = x.clone()
        o = ascent_step(clf, prior, xs, t, threads=threads)
        outs.append((o, xs))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    xs = x[:7].clone()   # a sample's result does not depend on its neighbours
    ascent_step(clf, prior, xs, t[:7], threads=2)
    assert torch.equal(xs, outs[0][1][:7])


@needs_cpu
def test_pack_is_cached_until_weights_change():
    clf, prior = tiny_classifier(), tiny_prior()
    assert pack_maximizer(clf, prior) is pack_maximizer(clf, prior)
    a = pack_maximizer(clf, prior)
    with torch.no_grad():
        clf.net.fc.bias.add_(1.0)
    assert pack_maximizer(clf, prior) is not a


def test_fused_coverage_and_errors():
    clf = tiny_classifier()
    assert fused_unsupported(clf, tiny_prior()) is None
    assert "cnn2d" in fused_unsupported(tiny_classifier(arch="cnn2d", channels=(4, 8)))
    assert fused_unsupported(clf, tiny_prior(arch="paper", latent=16)) is None   # classifier in the kernels
    assert "TotalVariation" in fused_unsupported(clf, None, regularizers=[TotalVariation()])
    assert "latent" in fused_unsupported(clf, tiny_prior(), regularizers=[Clamp()])
    x, t = inputs(None, 2)
    with pytest.raises(FusedUnsupported, match="Jitter"):
        ascent_step(clf, None, x, t, regularizers=[Jitter(2)])
    with pytest.raises(ValueError, match="layers: stem, block1, block2, pool, logits"):
        ascent_step_ref(clf, None, x, t, objective=Unit("block9", 0))
    with pytest.raises(ValueError, match="out of range"):
        ascent_step_ref(clf, None, x, t, objective=Unit("block1", 20))


# --- the engine ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["features", "latent"])
@pytest.mark.parametrize("path", ["autograd", "auto"])
def test_paper_preset_equals_a_plain_loop(mode, path):
    if path == "auto" and not available_backends()["cpu"]:
        pytest.skip("speechmax._C is not built")
    clf, prior = tiny_classifier(), (tiny_prior() if mode == "latent" else None)
    res = maximize(clf, ["yes", "no"], mode=mode, prior=prior, n=3, preset="paper", seed=7, backend=path)
    assert res.settings["steps"] == 20 and res.trajectory.shape == (6, 21)
    assert res.settings["backend"] == ("cpu" if path == "auto" else "autograd")
    start = res.latents_before if mode == "latent" else res.features_before
    distinct = start[:3]   # starts are shared across targets
    assert torch.equal(start[3:], distinct)
    assert abs(float(distinct.std()) - 0.1) < 0.03 and abs(float(distinct.mean())) < 4 * 0.1 / distinct.numel() ** 0.5
    # The seed paper's loop, written out: softmax probability, g / (rms(g) + 1e-5), 20 steps of 0.1 / 0.01.
    lr = 0.1 if mode == "latent" else 0.01
    x = start.clone()
    for _ in range(20):
        x.requires_grad_(True)
        feats = prior.decode(x) if prior is not None else x
        p = torch.softmax(clf(feats), -1).gather(1, res.targets[:, None]).sum()
        g, = torch.autograd.grad(p, x)
        with torch.no_grad():
            rms = g.pow(2).flatten(1).mean(1).sqrt().reshape((-1,) + (1,) * (x.dim() - 1))
            x = x + lr * g / (rms + 1e-5)
    final = res.latents if mode == "latent" else res.features
    assert rel_err(final - start, x.detach() - start) < 1e-4
    with torch.no_grad():
        feats = prior.decode(x) if prior is not None else x
        torch.testing.assert_close(res.probs_after, torch.softmax(clf(feats), -1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.trajectory[:, -1], res.probs_after.gather(1, res.targets[:, None])[:, 0])


def test_hidden_unit_objective_rises():
    clf = tiny_classifier()
    with torch.no_grad():   # the most active channel of block1 at a typical start (a dead unit cannot rise)
        k = int(clf.activations(0.1 * torch.randn(4, 80, 101))["block1"].mean((0, 2)).argmax())
    res = maximize(clf, None, objective=f"unit:block1:{k}", n=3, steps=10, lr=0.05, seed=0)
    assert (res.targets == -1).all() and res.hit_rate() is None
    assert (res.trajectory[:, -1] > res.trajectory[:, 0]).all()
    assert (res.trajectory.diff(dim=1) > -1e-6).float().mean() > 0.9


def test_class_to_class_moves_the_prediction():
    clf, sep = tiny_classifier(), tiny_classifier(arch="cnn2d", channels=(4, 8), seed=5)
    with torch.no_grad():   # a decisive classifier (a random head's logits are nearly flat)
        clf.net.fc.weight.mul_(20)
        clf.net.fc.bias.zero_()
    clips = -4 + 2 * torch.randn(4, 80, 101, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = clf(clips).argmax(-1)
    assert torch.softmax(clf(clips), -1).max(-1).values.min() > 0.5   # the clips are confidently "word A"
    target = next(w for i, w in enumerate(WORDS) if i not in before.tolist())
    res = maximize(clf, target, init=clips, steps=15, lr=0.05, separate=sep, seed=0)
    assert res.features_before.equal(clips) and res.hit_rate("classifier") == 1.0
    ti = WORDS.index(target)
    assert (res.probs_after[:, ti] > res.probs_before[:, ti]).all()
    assert res.separate_after is not None and res.separate_after.shape == (4, 35)


def test_all_targets_in_label_order():
    res = maximize(tiny_classifier(), "all", n=2, steps=1, seed=0)
    assert res.targets.tolist() == [t for t in range(35) for _ in range(2)] and res.labels == WORDS
    assert res.probs_after.shape == (70, 35) and res.trajectory.shape == (70, 2)


def test_latent_class_to_class_encodes_the_clips():
    clf, prior = tiny_classifier(), tiny_prior()
    clips = -4 + 2 * torch.randn(3, 80, 101, generator=torch.Generator().manual_seed(1))
    res = maximize(clf, ["yes", "no"], mode="latent", prior=prior, init=clips, steps=2)
    with torch.no_grad():
        mu = prior.encode(clips)[0]
    torch.testing.assert_close(res.latents_before, mu.repeat(2, 1))
    assert res.start.tolist() == [0, 1, 2, 0, 1, 2]


def test_deterministic_per_seed_and_independent_of_chunking():
    clf, prior = tiny_classifier(), tiny_prior()
    kw = dict(mode="latent", prior=prior, n=5, steps=3, seed=11)
    a = maximize(clf, ["yes", "no", "up"], chunk=1024, **kw)
    b = maximize(clf, ["yes", "no", "up"], chunk=4, **kw)
    c = maximize(clf, ["up"], chunk=2, **kw)
    assert torch.equal(a.latents_before, b.latents_before)
    torch.testing.assert_close(a.latents, b.latents, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.latents[10:], c.latents, rtol=0, atol=1e-6)
    # start j begins from the same noise for every target
    assert torch.equal(a.latents_before[:5], a.latents_before[5:10])
    d = maximize(clf, ["yes", "no", "up"], chunk=4, **dict(kw, seed=12))
    assert not torch.equal(a.latents_before, d.latents_before)
    # a block of the starts (as torchrun's ranks share a target's starts): the whole run's starts 2-4, merged back
    e = maximize(clf, ["yes", "no", "up"], **dict(kw, n=3), first_start=2)
    assert e.start.tolist() == [2, 3, 4] * 3 and e.settings["first_start"] == 2
    whole = [t * 5 + j for t in range(3) for j in range(2, 5)]
    assert torch.equal(e.latents_before, a.latents_before[whole])
    torch.testing.assert_close(e.latents, a.latents[whole], rtol=0, atol=1e-6)
    f = maximize(clf, ["yes", "no", "up"], **dict(kw, n=2))
    merged = merge_results([(f, [t * 5 + j for t in range(3) for j in range(2)]), (e, whole)])
    assert merged.start.tolist() == a.start.tolist() and merged.settings == a.settings
    torch.testing.assert_close(merged.latents, a.latents, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="first_start"):
        maximize(clf, "yes", mode="features", init=torch.zeros(1, 80, 101), steps=1, first_start=1)


def test_skipping_the_scores_before_changes_nothing_after(tmp_path):
    clf, prior = tiny_classifier(), tiny_prior()
    kw = dict(mode="latent", prior=prior, n=3, steps=2, seed=5, separate=tiny_classifier(seed=3))
    a = maximize(clf, ["yes", "no"], **kw)
    b = maximize(clf, ["yes", "no"], score_before=False, **kw)
    assert b.probs_before is None and b.separate_before is None and b.features_before is None
    for name in ("latents", "latents_before", "features", "probs_after", "separate_after", "trajectory"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    from speechmax.maximize.output import write_samples

    with pytest.raises(ValueError, match="score_before=False"):
        write_samples(b, tmp_path, vocoder=None)


def test_regularizers_run_on_the_autograd_path():
    clf, prior = tiny_classifier(), tiny_prior()
    res = maximize(clf, "yes", mode="latent", prior=prior, n=2, steps=3, seed=0,
                   regularizers=[L2(0.1), TotalVariation(0.01, 0.01), Jitter(3), Clamp()])
    assert res.settings["backend"] == "autograd" and "TotalVariation" in res.settings["fallback_reason"]
    lo, hi = clf.norm.mean - 1e9, clf.norm.mean + 4 * clf.norm.std
    assert (res.features <= hi[:, None] + 1e-5).all() and (res.features >= lo[:, None]).all()
    feats = maximize(clf, "yes", n=2, steps=3, seed=0, regularizers=[Clamp(low=-5.0, high=-3.0)])
    assert feats.settings["backend"] == "cpu" or not available_backends()["cpu"]
    assert feats.features.min() >= -5.0 and feats.features.max() <= -3.0


def test_fallback_for_models_the_kernels_do_not_cover():
    clf = tiny_classifier(arch="cnn2d", channels=(4, 8))
    res = maximize(clf, "yes", n=2, steps=2, seed=0)
    assert res.settings["backend"] == "autograd" and "cnn2d" in res.settings["fallback_reason"]
    paper = tiny_prior(arch="paper", latent=16)
    res = maximize(tiny_classifier(), "no", mode="latent", prior=paper, n=2, steps=2, seed=0, backend="autograd")
    assert res.settings["backend"] == "autograd" and res.latents.shape == (2, 16)
    with pytest.raises(FusedUnsupported, match="cnn2d"):
        maximize(clf, "no", n=2, steps=2, backend="cpu")


@needs_cpu
@pytest.mark.parametrize("optimizer", ["rms-normalized", "adam"])
def test_paper_prior_runs_its_decoder_in_its_own_kernel_around_the_step_kernel(optimizer, monkeypatch):
    import speechmax.ops.decoder2d as d2

    calls = []
    real = d2.decode2d
    monkeypatch.setattr(d2, "decode2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    clf, paper = tiny_classifier(), tiny_prior(arch="paper", latent=16)
    x, t = inputs(paper, 3)
    for objective in ["prob", Unit("block1", 2)]:
        o_ref, g_ref = ref64(clf, paper, x, t, objective=objective, regularizers=[L2(0.05)])
        o, g = ascent_step(clf, paper, x.clone(), t, objective=objective, update=False, return_grad=True,
                           regularizers=[L2(0.05)])
        torch.testing.assert_close(o, o_ref, rtol=1e-4, atol=1e-6)
        assert rel_err(g, g_ref) < 1e-4
    xr, xf = x.clone(), x.clone()
    sr, sf = (AdamState.zeros_like(x), AdamState.zeros_like(x)) if optimizer == "adam" else (None, None)
    for _ in range(3):
        ascent_step_ref(clf, paper, xr, t, optimizer=optimizer, lr=0.05, state=sr)
        ascent_step(clf, paper, xf, t, optimizer=optimizer, lr=0.05, state=sf)
    assert rel_err(xf - x, xr - x) < 1e-4
    assert len(calls) == 5  # 2 objectives + 3 steps, all through the decoder's kernel
    res = maximize(clf, "no", mode="latent", prior=paper, n=2, steps=2, seed=0)
    assert res.settings["backend"] == "cpu" and res.settings["decoder"] == "decoder2d"


def test_bad_input_is_a_clear_error():
    clf, prior = tiny_classifier(), tiny_prior()
    with pytest.raises(ValueError, match="unknown target word 'yess'; valid targets: all, backward, bed"):
        maximize(clf, "yess")
    other = Prior(dataclasses.replace(prior.cfg), FeatureConfig(hop_length=128)).eval()
    with pytest.raises(FeatureMismatchError, match="hop_length: 160 vs 128"):
        maximize(clf, "yes", mode="latent", prior=other)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be >= 1"):
            maximize(clf, "yes", steps=steps)
    with pytest.raises(ValueError, match="latent mode needs a prior"):
        maximize(clf, "yes", mode="latent")
    with pytest.raises(ValueError, match="unknown objective"):
        maximize(clf, "yes", objective="loudness")
    with pytest.raises(ValueError, match=r"init clips must be log-mel \(k, 80, 101\)"):
        maximize(clf, "yes", init=torch.zeros(2, 80, 50))
    with pytest.raises(ValueError, match="NaN"):
        maximize(clf, "yes", init=torch.full((1, 80, 101), float("nan")))


@pytest.mark.parametrize("path", ["autograd", "auto"])
def test_a_start_that_turns_non_finite_is_stopped_and_the_others_kept(path):
    clf = tiny_classifier()
    clips = -4 + 2 * torch.randn(3, 80, 101, generator=torch.Generator().manual_seed(2))
    clips[1] = 3e38   # finite, but the classifier overflows on it
    res = maximize(clf, "yes", init=clips, steps=4, seed=0, backend=path)
    assert res.nan_stopped == [1] and int(res.stopped_at[1]) == 0
    assert torch.isnan(res.trajectory[1]).all() and torch.equal(res.features[1], clips[1])
    assert torch.isfinite(res.trajectory[[0, 2]]).all() and not torch.equal(res.features[0], clips[0])


def test_ascent_stops_only_the_start_that_goes_non_finite_mid_way():
    calls = []

    def step(classifier, prior, x, targets, state=None, shifts=None, **kw):
        calls.append(len(x))
        obj = x[:, 0].clone()
        if len(calls) == 3:            # the second start turns non-finite at step 2
            obj[1] = float("nan")
        x += 1.0
        return obj

    x = torch.zeros(3, 4)
    traj, stopped = torch.full((3, 6), float("nan")), torch.full((3,), -1)
    _ascend(step, None, None, x, torch.zeros(3, dtype=torch.long), "prob", "rms-normalized", 0.1, (), None, 5, None,
            traj, stopped, None)
    assert stopped.tolist() == [-1, 2, -1] and calls == [3, 3, 3, 2, 2]
    assert x[:, 0].tolist() == [5.0, 2.0, 5.0]           # put back to its last finite x
    assert traj[1, :2].tolist() == [0.0, 1.0] and torch.isnan(traj[1, 2:]).all()
