"""Tests of urnet_core.study.plots: every figure function draws what it is given, headless."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from urnet_core.study import analysis as A  # noqa: E402
from urnet_core.study import scoring as S  # noqa: E402
from urnet_core.study import plots_weights as PW  # noqa: E402
from urnet_core.study import plots_results as PR  # noqa: E402
from urnet_core.study import plots as P  # noqa: E402

C = 4
NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    counts = np.array([40, 20, 10, 5])
    labels = np.repeat(np.arange(C), counts)
    n = labels.size
    kinds = rng.choice(["clean", "asym", "sym", "open", "ambiguous"], size=n, p=[0.6, 0.1, 0.1, 0.1, 0.1])
    truth = np.where(np.isin(kinds, ["asym", "sym"]), (labels + 1) % C, labels)
    truth = np.where(kinds == "open", -1, truth)
    table = pd.DataFrame({
        "path": None, "image_index": np.arange(n), "label": labels, "class_name": [NAMES[i] for i in labels],
        "source": rng.choice(["google", "flickr"], size=n), "rank": rng.integers(0, 30, size=n).astype(float),
        "split": "train", "true_label": truth, "noise_type": kinds, "second_label": -1,
    })
    images = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(C), size=n)
    feats = rng.normal(size=(n, 6)) + labels[:, None]
    return dict(counts=counts, labels=labels, table=table, images=images, probs=probs, feats=feats)


def _images_in(fig):
    return sum(len(ax.images) for ax in fig.axes)


def test_sample_images_per_class_and_noise_type(data):
    fig = P.sample_images(data["table"], by="label", images=data["images"], class_names=NAMES, per_group=3)
    assert isinstance(fig, Figure)
    assert _images_in(fig) == 3 * C
    assert not plt.get_fignums()  # figures are detached from pyplot (no double display in notebooks)
    fig = P.sample_images(data["table"], by="noise_type", images=data["images"], class_names=NAMES, per_group=2)
    assert _images_in(fig) == 2 * data["table"]["noise_type"].nunique()
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert any("\u2192open" in t for t in titles)
    with pytest.raises(ValueError, match="no 'oops' column"):
        P.sample_images(data["table"], by="oops", images=data["images"])
    with pytest.raises(ValueError, match="root"):
        P.sample_images(data["table"], by="label")


def test_file_based_images(tmp_path, data):
    from PIL import Image

    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    t = pd.DataFrame({"path": ["x.png"], "image_index": [-1], "label": [0]})
    assert P.load_image(t, 0, root=tmp_path).shape == (5, 5, 3)
    fig = P.image_grid(t, [[0]], root=tmp_path)
    assert _images_in(fig) == 1


def test_class_charts(data):
    fig = P.class_size_chart(data["counts"], NAMES)
    heights = [p.get_height() for p in fig.axes[0].containers[0]]
    assert heights == [40, 20, 10, 5]
    assert fig.axes[0].get_yscale() == "log"
    fig = P.class_weight_chart(A.class_weight_table(data["labels"], C))
    assert len(fig.axes) == 2


def test_challenge_figures(data):
    from urnet_core.reweight.cluster import confusion_matrix

    m = confusion_matrix(data["labels"], data["probs"], C)
    assert isinstance(P.confusion_heatmap(m, NAMES), Figure)
    spread = A.feature_spread(data["feats"], data["labels"], C)
    fig = P.spread_scatter(spread, NAMES)
    assert len(fig.axes[0].collections[0].get_offsets()) == C
    noise = A.estimated_noise_rates(data["labels"], data["probs"], data["table"]["true_label"])
    fig = P.noise_rate_scatter(noise, NAMES)
    assert len(fig.axes[0].collections[0].get_offsets()) == C
    with pytest.raises(ValueError, match="true"):
        P.noise_rate_scatter(noise.drop(columns="true"))
    fig = P.noise_by_rank_chart(A.noise_by_rank(data["table"], bins=3))
    assert len(fig.axes[0].lines) == 2  # one line per source
    amb = A.ambiguity(data["probs"], data["labels"], data["table"]["noise_type"])
    fig = P.ambiguity_histogram(amb["margin"], data["table"]["noise_type"])
    assert len(fig.axes[0].patches) > 0


def test_weight_histograms(data):
    n = len(data["labels"])
    w = {"instance": np.linspace(0, 1, n), "cluster": np.ones(n)}
    fig = PW.weight_histograms(w, data["table"]["noise_type"])
    assert len(fig.axes) == 2
    assert len(fig.axes[0].patches) == 4  # clean / noisy / open-set / ambiguous outlines
    with pytest.raises(ValueError, match="entries"):
        PW.weight_histograms({"x": np.ones(3)}, data["table"]["noise_type"])


def test_cluster_and_bag_figures(data):
    from urnet_core.reweight.cluster import cluster_weights, confusion_matrix

    m = confusion_matrix(data["labels"], data["probs"], C)
    _, details = cluster_weights(data["feats"], data["labels"], m, top_k=2, n_clusters=3, backend="sklearn",
                                 return_details=True)
    fig = PW.cluster_groups_figure(details[0], data["table"], images=data["images"], class_names=NAMES, per_group=4)
    assert 3 <= _images_in(fig) <= 12
    fig = PW.cluster_composition_chart(details[0], NAMES)
    assert len(fig.axes[0].patches) == 3 * 3  # groups x pooled classes
    bags = S.sample_bags(data["labels"], classes=[0, 1], bags_per_class=2)
    sal = np.full(bags.shape, 1 / 3)
    fig = PW.bag_saliency_figure(bags, sal, data["table"], images=data["images"], class_names=NAMES)
    assert _images_in(fig) == bags.size
    with pytest.raises(ValueError, match="same shape"):
        PW.bag_saliency_figure(bags, sal[:, :2], data["table"], images=data["images"])


def _results():
    rows = []
    for method, group, base in [("baseline", "ladder", 0.6), ("+class", "ladder", 0.65), ("peer x", "peer", 0.62),
                                ("oracle: clean only", "oracle", 0.8)]:
        for seed in range(3):
            rows.append({"method": method, "group": group, "seed": seed, "top1": base + 0.01 * seed,
                         "balanced_accuracy": base, "macro_f1": base, "top5": base, "ece": 0.1,
                         "per_class_accuracy": [base + 0.1, base, base - 0.1, base - 0.2]})
    return pd.DataFrame(rows)


def test_result_charts():
    from urnet_core.study.ablation_tables import accuracy_by_class_size, summary_table

    res = _results()
    summary = summary_table(res)
    fig = PR.ablation_chart(summary)
    bars = fig.axes[0].patches
    assert len(bars) == 4
    assert sorted(b.get_width() for b in bars) == pytest.approx([61, 63, 66, 81])
    with pytest.raises(ValueError, match="summary_table"):
        PR.ablation_chart(res)
    fig = PR.accuracy_by_size_chart(accuracy_by_class_size(res, np.array([40, 20, 10, 5])))
    assert len(fig.axes[0].patches) == 3 * 4
    pc = S.per_class_accuracy_table([[0.9, 0.5, 0.2, 0.1]], [40, 20, 10, 5])
    assert isinstance(PR.per_class_accuracy_chart(pc), Figure)
    timing = pd.DataFrame({"backend": ["faiss", "sklearn"], "seconds": [0.1, 0.5], "min_seconds": [0.1, 0.4],
                           "problems": [4, 4], "rows": [100, 100], "mean_inertia": [1.0, 1.0]})
    fig = PR.backend_timing_chart(timing)
    assert [p.get_height() for p in fig.axes[0].patches] == pytest.approx([0.1, 0.5])


# --------------------------------------------------------------------------- figures that show what they say
def test_discrete_weights_draw_one_visible_bar_per_group_and_value(data):
    # A class weight is constant within a class: each group gets its own bar at each value,
    # side by side (four outlines on top of each other showed only one).
    kinds = data["table"]["noise_type"]
    class_w = np.array([1.0, 1.5, 2.0, 3.0])[data["labels"]]
    fig = PW.weight_histograms({"class": class_w}, kinds)
    ax = fig.axes[0]
    groups = len(PW._noise_groups(np.asarray(kinds)))
    assert len(ax.patches) == groups * 4
    lefts = {(round(p.get_x(), 6)) for p in ax.patches}
    assert len(lefts) == groups * 4  # no two bars at the same place
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "1.5", "2", "3"]


def test_cluster_groups_show_confused_classes_framed_in_another_colour(data):
    from urnet_core.reweight.cluster import cluster_weights, confusion_matrix

    m = confusion_matrix(data["labels"], data["probs"], C)
    _, details = cluster_weights(data["feats"], data["labels"], m, top_k=2, n_clusters=3, backend="sklearn",
                                 return_details=True)
    fig = PW.cluster_groups_figure(details[0], data["table"], images=data["images"], class_names=NAMES, per_group=6)
    colours = {matplotlib.colors.to_hex(ax.spines["left"].get_edgecolor()) for ax in fig.axes if ax.images}
    comp = np.asarray(details[0].composition)
    if (comp[:, 1:].sum(1) > 0).any():  # some group holds confused classes' images: they are shown
        assert "#dd8452" in colours
    assert "#4c72b0" in colours


def test_log_axes_have_several_tick_labels_within_a_decade():
    fig = P.class_size_chart(np.array([150, 120, 90, 60, 40, 30, 22]), list("abcdefg"))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3, labels
    per_class = pd.DataFrame({"count": [20, 35, 60, 90], "accuracy": [0.5, 0.6, 0.7, 0.8],
                              "accuracy_std": [0.1] * 4, "group": ["tail", "medium", "medium", "head"]})
    fig = PR.per_class_accuracy_chart(per_class)
    assert len([t for t in fig.axes[0].get_xticklabels() if t.get_text()]) >= 3


def test_scatter_labels_do_not_overlap():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    spread = pd.DataFrame({"class": range(6), "inter": [1.0, 1.01, 1.02, 1.0, 1.01, 3.0],
                           "intra": [1.0, 1.0, 1.01, 1.02, 1.0, 1.0], "n": [5] * 6})
    fig = P.spread_scatter(spread, [f"class {i}" for i in range(6)])
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert boxes
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_ablation_chart_legend_outside_the_bars():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    summary = pd.DataFrame({"method": ["baseline", "+class", "peer a", "oracle"],
                            "group": ["ladder", "ladder", "peer", "oracle"],
                            "top1_mean": [0.7, 0.75, 0.8, 0.9], "top1_low": [0.6, 0.7, 0.75, 0.85],
                            "top1_high": [0.8, 0.8, 0.85, 0.95]})
    fig = PR.ablation_chart(summary)
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"ladder", "peer", "oracle", "baseline"}
