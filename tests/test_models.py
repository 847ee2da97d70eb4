"""Backbones, local weight loading, losses and the bag attention branch + sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from urnet_core.training.losses import generalized_cross_entropy, weighted_soft_cross_entropy
from urnet_core.models import MODEL_NAMES, BagAttentionBranch, BagBatchSampler, build_model


# --- backbones --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [8, 16, 28])
def test_small_cnn_shapes_any_size(size):
    torch.manual_seed(0)
    model = build_model("small_cnn", 7).eval()
    x = torch.randn(3, 1, size, size)
    feats = model.encoder(x)
    assert feats.shape == (3, model.feature_dim) == (3, 128)
    assert torch.allclose(model(x), model.head(feats))
    assert model.head.out_features == 7


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n != "small_cnn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_torchvision_backbones_forward(name, in_channels):
    model = build_model(name, 4, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, 32, 32))
        feats = model.encoder(torch.randn(2, in_channels, 32, 32))
    assert out.shape == (2, 4)
    assert feats.shape == (2, model.feature_dim)
    assert model.feature_dim == {"resnet18": 512, "resnet50": 2048, "resnext101_32x8d": 2048}[name]


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="small_cnn"):
        build_model("vgg", 3)


def test_backbone_state_dict_roundtrip(tmp_path):
    torch.manual_seed(1)
    src = build_model("small_cnn", 5).eval()
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    dst = build_model("small_cnn", 5, weights_path=path).eval()
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(src(x), dst(x))
    # A different class count keeps the encoder but gets a new head.
    other = build_model("small_cnn", 3, weights_path=path).eval()
    assert torch.equal(other.encoder(x), src.encoder(x))
    assert other.head.out_features == 3


def test_torchvision_state_dict_loads_with_grey_first_conv(tmp_path):
    torch.manual_seed(3)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = build_model("resnet18", 6, in_channels=1, weights_path=path)
    sd = model.encoder.state_dict()
    assert torch.allclose(sd["conv1.weight"], tv.conv1.weight.mean(dim=1, keepdim=True))
    assert torch.equal(sd["layer4.1.conv2.weight"], tv.layer4[1].conv2.weight)
    assert model.head.out_features == 6  # 1000-class fc ignored
    rgb = build_model("resnet18", 1000, in_channels=3, weights_path=path).eval()
    tv.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rgb(x), tv(x), atol=1e-5)  # matching head is loaded too


def test_weights_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_model("small_cnn", 3, weights_path=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        build_model("small_cnn", 3, weights_path=junk)
    small = tmp_path / "small.pt"
    torch.save(build_model("small_cnn", 3).state_dict(), small)
    with pytest.raises(ValueError, match="do not fit model 'resnet18'"):
        build_model("resnet18", 3, weights_path=small)


# --- losses -----------------------------------------------------------------------------------


def test_weighted_soft_ce_equals_ce_for_onehot_unit_weights():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g)
    labels = torch.tensor([0, 1, 2, 3, 1, 0])
    onehot = F.one_hot(labels, 4).float()
    got = weighted_soft_cross_entropy(logits, onehot, torch.ones(6))
    assert torch.allclose(got, F.cross_entropy(logits, labels))


def test_weighted_soft_ce_hand_case():
    # Two classes, logits (0, 0) -> p = (0.5, 0.5); CE = log 2 for any target row.
    logits = torch.zeros(2, 2)
    targets = torch.tensor([[0.8, 0.2], [0.0, 1.0]])
    weights = torch.tensor([2.0, 0.0])
    got = weighted_soft_cross_entropy(logits, targets, weights)
    assert math.isclose(got.item(), 2.0 * math.log(2) / 2, rel_tol=1e-6)  # divided by B, not sum(w)
    per = weighted_soft_cross_entropy(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[0.5, 0.5]]), reduction="none")
    # p = (3/4, 1/4): -0.5 log(3/4) - 0.5 log(1/4)
    assert math.isclose(per.item(), -0.5 * math.log(0.75) - 0.5 * math.log(0.25), rel_tol=1e-6)


def test_weighted_soft_ce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="weights"):
        weighted_soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3))


def test_gce_limits():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 5, generator=g)
    labels = torch.randint(0, 5, (8,), generator=g)
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(generalized_cross_entropy(logits, labels, q=1e-4), ce, atol=1e-3)
    p_y = torch.softmax(logits, 1)[torch.arange(8), labels]
    assert torch.allclose(generalized_cross_entropy(logits, labels, q=1.0), (1 - p_y).mean())  # MAE
    w = torch.zeros(8)
    w[0] = 8.0
    assert torch.allclose(generalized_cross_entropy(logits, labels, q=0.7, weights=w), (1 - p_y[0] ** 0.7) / 0.7)
    with pytest.raises(ValueError):
        generalized_cross_entropy(logits, labels, q=0.0)


# --- bag attention branch ---------------------------------------------------------------------


def test_bag_branch_saliency_and_gradient_reaches_backbone():
    torch.manual_seed(0)
    backbone = build_model("small_cnn", 5)
    branch = BagAttentionBranch(backbone.feature_dim, 5, hidden=16)
    x = torch.randn(12, 1, 16, 16)
    feats = backbone.encoder(x)
    logits, saliency = branch(feats.reshape(4, 3, -1))
    assert logits.shape == (4, 5) and saliency.shape == (4, 3)
    assert torch.allclose(saliency.sum(dim=1), torch.ones(4))
    assert (saliency > 0).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    conv_grad = backbone.encoder[0][0].weight.grad
    assert conv_grad is not None and conv_grad.abs().sum() > 0
    assert branch.fc2.weight.grad.abs().sum() > 0  # the attention layers learn too
    assert backbone.head.weight.grad is None  # the bag loss bypasses the instance head


def test_bag_branch_is_attention_weighted_sum():
    torch.manual_seed(0)
    branch = BagAttentionBranch(4, 2, hidden=3)
    feats = torch.randn(1, 3, 4)
    logits, saliency = branch(feats)
    expected = branch.fc4((saliency[0][:, None] * feats[0]).sum(0))
    assert torch.allclose(logits[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="B, Nb, D"):
        branch(torch.randn(3, 4))


def _sampler_labels():
    # class sizes 7, 3, 1, 5: not multiples of 3, and a singleton class
    return np.array([0] * 7 + [1] * 3 + [2] * 1 + [3] * 5)[np.random.default_rng(0).permutation(16)]


def test_bag_sampler_invariants():
    labels = _sampler_labels()
    sampler = BagBatchSampler(labels, bag_size=3, bags_per_batch=2, seed=5)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = np.concatenate(batches)
    assert set(flat.tolist()) == set(range(16))  # every index visited
    bags = flat.reshape(-1, 3)
    assert len(bags) == sampler.num_bags == 3 + 1 + 1 + 2
    for bag in bags:
        assert len(set(labels[bag])) == 1  # one label per bag
    # Only the top-up of short classes repeats indices: 7->9, 1->3, 5->6 gives 2+2+1 extras.
    assert flat.size - 16 == 5
    singleton = np.flatnonzero(labels == 2)[0]
    assert (bags == singleton).all(axis=1).sum() == 1
    for bag in bags:  # top-ups avoid repeats inside a bag when the class allows
        if labels[bag[0]] != 2:
            assert len(set(bag.tolist())) == 3
    assert all(len(b) == 6 for b in batches[:-1])


def test_bag_sampler_deterministic_per_epoch():
    labels = _sampler_labels()
    a = BagBatchSampler(labels, bag_size=3, bags_per_batch=2, seed=1)
    b = BagBatchSampler(labels, bag_size=3, bags_per_batch=2, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(4)
    assert list(a) != first
    a.set_epoch(3)
    assert list(a) == first
    c = BagBatchSampler(labels, bag_size=3, bags_per_batch=2, seed=2)
    c.set_epoch(3)
    assert list(c) != first


def test_bag_sampler_drop_last_and_errors():
    labels = np.repeat(np.arange(4), 6)  # 8 bags
    sampler = BagBatchSampler(labels, bag_size=3, bags_per_batch=3, seed=0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 and all(len(b) == 9 for b in batches)
    assert len(BagBatchSampler(labels, bag_size=3, bags_per_batch=3, seed=0)) == 3
    with pytest.raises(ValueError, match="empty"):
        BagBatchSampler(np.array([], dtype=int), bags_per_batch=1, seed=0)
