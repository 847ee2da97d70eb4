"""Peer methods ELR, Co-teaching and DivideMix: their mechanisms, determinism, and learning under noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from urnet_core.models.backbones import build_model
from urnet_core.peers import ELR, CoTeaching, DivideMix, SoftmaxEnsemble
from urnet_core.peers import dividemix as dm
from urnet_core.peers.coteaching import coteaching_keep_rate, coteaching_loss, default_num_gradual, small_loss_indices
from urnet_core.peers.elr import ELRTargets, elr_loss, elr_regularizer
from urnet_core.training.inference import evaluate, predict
from urnet_core.training.loop import TrainConfig, train
from conftest import DigitsDataset as Digits




@pytest.fixture(scope="module")
def noisy_digits():
    """1000 training digits with 30% symmetric label noise (and light augmentation), 500 clean test digits."""
    data = load_digits()
    perm = np.random.default_rng(0).permutation(len(data.target))
    tr, te = perm[:1000], perm[1000:1500]
    rng = np.random.default_rng(1)
    labels = data.target[tr].copy()
    flip = rng.random(labels.size) < 0.3
    labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10  # another class, uniformly
    return Digits(data.data[tr], labels, noise=0.05), Digits(data.data[te], data.target[te])


FAST = dict(batch_size=64, lr=0.05, amp=False, device="cpu")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------------- ELR
def test_elr_target_is_running_average():
    targets = ELRTargets(4, 3, beta=0.7)
    idx = torch.tensor([1, 3])
    p1 = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    p2 = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.6]])  # second row sums to 0.8: normalised first
    targets.update(idx, p1)
    out = targets.update(idx, p2)
    expected = 0.7 * (0.3 * p1) + 0.3 * (p2 / p2.sum(1, keepdim=True))
    assert torch.allclose(targets.targets[idx], expected)
    assert torch.allclose(out, expected)
    assert torch.equal(targets.targets[[0, 2]], torch.zeros(2, 3))  # untouched rows stay at 0


def test_elr_regularizer_gradient_pulls_p_towards_t():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    t = torch.softmax(torch.randn(5, 4) * 2, dim=1)
    p = torch.softmax(logits, dim=1)
    elr_regularizer(p, t).backward()
    with torch.no_grad():
        inner = (p * t).sum(1, keepdim=True)
        analytic = -p * (t - inner) / (1 - inner) / 5  # d/dz_c mean_i log(1 - <p_i, t_i>)
    assert torch.allclose(logits.grad, analytic, atol=1e-6)
    with torch.no_grad():
        stepped = torch.softmax(logits - 0.5 * logits.grad, dim=1)
    assert ((stepped * t).sum(1) > (p * t).sum(1)).all()  # a descent step raises <p, t> on every row
    # On a memorising instance (label 0, target on class 2) the term lowers the push to class 0 and
    # raises class 2's logit relative to cross entropy alone.
    z = torch.zeros(1, 3, requires_grad=True)
    targets = ELRTargets(1, 3, beta=1.0)  # beta=1 freezes the target we set
    targets.targets[0] = torch.tensor([0.05, 0.05, 0.9])
    loss, ce, _ = elr_loss(z, torch.tensor([0]), torch.tensor([0]), targets, lam=3.0)
    grad_total = torch.autograd.grad(loss, z, retain_graph=True)[0]
    grad_ce = torch.autograd.grad(ce, z)[0]
    assert grad_total[0, 2] < grad_ce[0, 2]  # descent raises class 2 more
    assert grad_total[0, 0] > grad_ce[0, 0]  # and class 0 less


def test_elr_with_lambda_zero_is_the_baseline(noisy_digits):
    # Same initial weights, batches, optimizer and LR schedule as train(): only the loss differs.
    train_ds, _ = noisy_digits
    cfg = TrainConfig(epochs=2, seed=3, **FAST)
    base = train(train_ds, num_classes=10, config=cfg, progress=False)
    elr = train(train_ds, num_classes=10, config=cfg, method=ELR(lam=0.0), progress=False)
    for (k, a), b in zip(base.model.state_dict().items(), elr.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-4), k
    assert elr.history[-1]["lr"] == pytest.approx(base.history[-1]["lr"])


# ----------------------------------------------------------------------------------- Co-teaching
def test_coteaching_keep_rate_schedule():
    rates = [coteaching_keep_rate(e, noise_rate=0.2, num_gradual=4) for e in range(6)]
    assert rates == pytest.approx([1.0, 0.95, 0.9, 0.85, 0.8, 0.8])
    assert coteaching_keep_rate(0, noise_rate=0.5, num_gradual=1) == 1.0
    assert coteaching_keep_rate(3, noise_rate=0.5, num_gradual=1) == 0.5
    assert [default_num_gradual(e) for e in (1, 4, 12, 40)] == [1, 2, 6, 10]


def test_coteaching_keeps_exactly_the_small_loss_fraction():
    losses = torch.tensor([0.9, 0.1, 0.5, 2.0, 0.3, 0.05, 1.5, 0.7, 0.2, 3.0])
    kept = small_loss_indices(losses, 0.7)
    assert kept.numel() == 7
    assert set(kept.tolist()) == set(torch.argsort(losses)[:7].tolist())
    assert losses[kept].max() < losses[[i for i in range(10) if i not in kept.tolist()]].min()
    assert small_loss_indices(losses, 0.8).numel() == 8
    assert small_loss_indices(losses, 0.0).numel() == 1  # never an empty update


def test_coteaching_exchanges_selections():
    labels = torch.zeros(6, dtype=torch.long)
    good, bad = torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0])
    # Network 1 fits instances 0-2, network 2 fits instances 3-5.
    logits_1 = torch.stack([good, good, good, bad, bad, bad]).requires_grad_(True)
    logits_2 = torch.stack([bad, bad, bad, good, good, good]).requires_grad_(True)
    loss_1, loss_2, by_1, by_2 = coteaching_loss(logits_1, logits_2, labels, keep_rate=0.5)
    assert sorted(by_1.tolist()) == [0, 1, 2] and sorted(by_2.tolist()) == [3, 4, 5]
    # Each network learns from the other's picks: network 1 on 3-5 (where it is wrong).
    assert loss_1.item() == pytest.approx(F.cross_entropy(logits_1[3:], labels[3:]).item())
    assert loss_2.item() == pytest.approx(F.cross_entropy(logits_2[:3], labels[:3]).item())
    g1, g2 = torch.autograd.grad(loss_1 + loss_2, [logits_1, logits_2])
    assert g1[:3].abs().sum() == 0 and (g1[3:].abs().sum(1) > 0).all()
    assert g2[3:].abs().sum() == 0 and (g2[:3].abs().sum(1) > 0).all()


# ----------------------------------------------------------------------------------- DivideMix
def test_gmm_split_puts_low_losses_in_clean():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0.1, 0.03, 80).clip(0), rng.normal(2.0, 0.2, 20)
    prob = dm.clean_probability(np.concatenate([low, high]))
    assert prob.shape == (100,)
    assert (prob[:80] > 0.5).all() and (prob[80:] < 0.5).all()
    assert prob[:80].min() > 0.9 and prob[80:].max() < 0.1
    assert np.array_equal(dm.clean_probability(np.ones(5)), np.ones(5))  # nothing to separate


def test_sharpen_mixup_and_prior():
    p = torch.softmax(torch.randn(6, 5), dim=1)
    s = dm.sharpen(p, 0.5)
    assert s.shape == p.shape and torch.allclose(s.sum(1), torch.ones(6))
    assert (s.max(1).values >= p.max(1).values - 1e-7).all() and torch.equal(s.argmax(1), p.argmax(1))
    assert torch.allclose(dm.sharpen(p, 1.0), p)
    assert torch.allclose(s, p**2 / (p**2).sum(1, keepdim=True))
    x, t = torch.randn(6, 1, 8, 8), dm.sharpen(p, 0.5)
    perm = torch.randperm(6)
    mx, mt = dm.mixup(x, t, 0.7, perm)
    assert mx.shape == x.shape and mt.shape == t.shape
    assert torch.allclose(mt.sum(1), torch.ones(6)) and torch.allclose(mx, 0.7 * x + 0.3 * x[perm])
    lams = [dm.mixup_lambda(np.random.default_rng(i), 4.0) for i in range(50)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    assert dm.uniform_prior_penalty(torch.zeros(4, 5)).item() == pytest.approx(0.0, abs=1e-7)
    assert dm.uniform_prior_penalty(torch.tensor([[3.0, 0, 0], [3.0, 0, 0]])).item() > 0.1
    assert [dm.linear_rampup(e, 2, 4) for e in (1, 2, 4, 6, 9)] == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_mixmatch_loss_trains_only_its_network():
    torch.manual_seed(0)
    net, peer = build_model("small_cnn", 4), build_model("small_cnn", 4)
    net.train(), peer.eval()
    x = (torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8))
    u = (torch.randn(5, 1, 8, 8), torch.randn(5, 1, 8, 8))
    y = F.one_hot(torch.arange(6) % 4, 4).float()
    loss, parts = dm.mixmatch_loss(net, peer, x, y, torch.full((6,), 0.9), u, temperature=0.5, lam=0.8, lambda_u=25.0)
    loss.backward()
    assert all(v == v for v in parts.values()) and parts["loss_u"] > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None for p in peer.parameters())
    loss_no_u, parts_no_u = dm.mixmatch_loss(net, peer, x, y, torch.ones(6), None, temperature=0.5, lam=0.8, lambda_u=25.0)
    assert parts_no_u["loss_u"] == 0.0 and torch.isfinite(loss_no_u)


def test_two_views_are_two_draws():
    ds = Digits(np.ones((3, 64)), np.array([0, 1, 2]), noise=0.1)
    x1, x2, y, idx = dm.TwoViews(ds)[1]
    assert x1.shape == x2.shape == (1, 8, 8) and (y, idx) == (1, 1)
    assert not torch.equal(x1, x2)


def test_per_instance_losses_of_both_networks_in_one_pass():
    torch.manual_seed(0)
    nets = [build_model("small_cnn", 10), build_model("small_cnn", 10)]
    ds = Digits(np.random.default_rng(0).uniform(0, 16, (30, 64)), np.arange(30) % 10)
    losses = dm.per_instance_losses(nets, ds, ds.labels, batch_size=8, device=torch.device("cpu"))
    assert losses.shape == (2, 30) and all(net.training for net in nets)  # modes restored
    for k, net in enumerate(nets):
        net.eval()
        with torch.no_grad():
            expected = F.cross_entropy(net(ds.x), torch.from_numpy(ds.labels), reduction="none").numpy()
        assert np.allclose(losses[k], expected, atol=1e-5)


def test_dividemix_codivide_uses_the_other_network(noisy_digits, monkeypatch):
    train_ds, _ = noisy_digits
    calls, used = [], []
    real_prob, real_phase = dm.clean_probability, dm.DivideMix._mixmatch_phase

    def tagged_prob(losses, *, random_state=0):
        prob = real_prob(losses, random_state=random_state)
        calls.append(prob)
        return prob

    def spy_phase(self, epoch, member, prob):
        used.append((member, prob))
        return real_phase(self, epoch, member, prob)

    monkeypatch.setattr(dm, "clean_probability", tagged_prob)
    monkeypatch.setattr(dm.DivideMix, "_mixmatch_phase", spy_phase)
    cfg = TrainConfig(epochs=2, **FAST)
    result = train(train_ds, num_classes=10, config=cfg, method=DivideMix(warmup_epochs=1), progress=False)
    assert len(calls) == 2 and [m for m, _ in used] == [0, 1]
    assert not np.array_equal(calls[0], calls[1])  # the two networks divide differently
    assert used[0][1] is calls[1] and used[1][1] is calls[0]  # network k trains on the other's division
    rec = result.history[-1]
    assert rec["labeled_fraction_1"] == pytest.approx((calls[1] > 0.5).mean())
    assert rec["labeled_fraction_2"] == pytest.approx((calls[0] > 0.5).mean())


# ----------------------------------------------------------------------------------- all three
def test_softmax_ensemble_averages_members():
    torch.manual_seed(0)
    a, b = build_model("small_cnn", 10), build_model("small_cnn", 10)
    ens = SoftmaxEnsemble(a, b).eval()
    ds = Digits(np.random.default_rng(0).uniform(0, 16, (20, 64)), np.arange(20) % 10)
    probs = predict(ens, ds, device="cpu")
    expected = (predict(a, ds, device="cpu") + predict(b, ds, device="cpu")) / 2
    assert np.allclose(probs, expected, atol=1e-6)
    assert ens.feature_dim == 256 and ens.members == (a, b)


PEERS = {"elr": ELR, "coteaching": lambda: CoTeaching(noise_rate=0.3), "dividemix": lambda: DivideMix(warmup_epochs=1)}
METHODS = {name: (lambda make: lambda ds, cfg, **kw: train(ds, num_classes=10, config=cfg, method=make(),
                                                          progress=False, **kw))(make)
           for name, make in PEERS.items()}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_deterministic_for_a_seed(noisy_digits, method):
    train_ds, _ = noisy_digits
    state = torch.get_rng_state()
    first = METHODS[method](train_ds, TrainConfig(epochs=2, seed=5, **FAST))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone
    second = METHODS[method](train_ds, TrainConfig(epochs=2, seed=5, **FAST))
    other = METHODS[method](train_ds, TrainConfig(epochs=2, seed=6, **FAST))
    assert _same_weights(first.model, second.model)
    assert not _same_weights(first.model, other.model)
    assert [r["train_loss"] for r in first.history] == [r["train_loss"] for r in second.history]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_learns_under_label_noise(noisy_digits, method, tmp_path):
    train_ds, test_ds = noisy_digits
    cfg = TrainConfig(epochs=3, **FAST)
    result = METHODS[method](train_ds, cfg) if method != "elr" else METHODS["elr"](
        train_ds, cfg, eval_dataset=test_ds, run_dir=tmp_path)
    metrics, probs = evaluate(result.model, test_ds, num_classes=10, batch_size=256, device="cpu")
    assert metrics["top1"] > 0.7  # chance is 0.1; labels are 30% wrong
    assert probs.shape == (500, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len(result.history) == 3 and not result.model.training
    if method == "elr":
        assert result.final_metrics["top1"] == pytest.approx(metrics["top1"])
        assert (tmp_path / "metrics.json").exists() and (tmp_path / "model.pt").exists()
