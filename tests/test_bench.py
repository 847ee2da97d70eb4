"""``urnet bench`` at tiny sizes: table shape, exponent fit, cached data, report files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from urnet_core.benchmarks import data as D
from urnet_core.benchmarks import fit as F
from urnet_core.benchmarks import kmeans as K
from urnet_core.benchmarks import loading as L
from urnet_core.benchmarks import pipeline as P
from urnet_core.benchmarks import report as R
from urnet_core.benchmarks import suite as S


def test_fit_exponent_recovers_known_exponent():
    n = np.array([1e5, 3e5, 1e6, 4e6])
    noise = np.array([1.02, 0.98, 1.01, 0.99])
    b, a = F.fit_exponent(n, 3e-6 * n**1.07 * noise)
    assert b == pytest.approx(1.07, abs=0.02)
    assert a == pytest.approx(3e-6, rel=0.3)
    assert F.project_time(10.0, 1e6, 4e6, 1.0) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="two distinct"):
        F.fit_exponent([1e5, 1e5], [1.0, 2.0])


def test_parse_sizes_and_long_tail():
    assert D.parse_sizes("1e5x1000x256, 2e4x100x64") == [D.Size(100_000, 1000, 256), D.Size(20_000, 100, 64)]
    for bad in ("1e5x1000", "1e5x1000xabc", "10x100x8", ""):
        with pytest.raises(ValueError):
            D.parse_sizes(bad)
    sizes = D.long_tail_sizes(50_000, 100, imbalance=100.0)
    assert sizes.sum() == 50_000 and sizes.min() >= 1
    assert 50 < sizes.max() / sizes.min() <= 110


def test_synthetic_data_is_cached_and_web_shaped(tmp_path):
    size = D.Size(1000, 20, 8)
    data = D.synthetic_data(size, tmp_path, progress=False)
    feats, labels, preds, vectors = data.load()
    assert feats.shape == (1000, 8) and feats.dtype == np.float16 and isinstance(feats, np.memmap)
    assert np.isfinite(np.asarray(feats, dtype=np.float32)).all()
    assert labels.shape == preds.shape == (1000,) and vectors.shape == (20, 300)
    assert np.all(np.diff(labels) >= 0)  # rows ordered by class
    wrong = preds != labels
    assert 0.2 < wrong.mean() < 0.4
    assert (preds[wrong] // 5 == labels[wrong] // 5).mean() > 0.7  # mostly confused within groups
    mtime = data.features.stat().st_mtime_ns
    again = D.synthetic_data(size, tmp_path, progress=False)
    assert again.root == data.root and again.features.stat().st_mtime_ns == mtime


def test_weights_cli_reports_stages_and_rss(tmp_path):
    data = D.synthetic_data(D.Size(600, 20, 8), tmp_path, progress=False)
    res = P.weights_section(data, P.WeightsVariant("float16", "ids"), instance_epochs=1,
                            max_other_cores=float("inf"))
    assert len(res["attempts"]) == 1 and len(res["load"]) == 2  # the load is recorded with the row
    cpu = res["cpu"]  # what other work took meanwhile, measured by the launcher
    if cpu.get("other_cores") is not None:
        assert cpu["child_s"] > 0 and cpu["machine_busy_s"] > 0 and cpu["other_cores"] >= 0
        assert "other work" in P.load_note(res) and "cores" in P.load_note(res)
    st = res["seconds"]
    for stage in ("validate_features", "validate_probs", "class", "cluster", "instance", "combine", "label", "other"):
        assert stage in st and st[stage] >= 0, stage
    assert res["total"] >= sum(v for k, v in st.items() if k != "other") > 0
    assert res["peak_rss_bytes"] > 50e6 and res["ru_maxrss_bytes"] > 0
    assert res["n"] == 600 and res["read_pass"] > 0
    timings = res["timings"]  # what the child wrote into weights.json (no log parsing)
    assert {"import_torch", "validate_features", "cluster", "instance", "file_hash"} <= set(timings)
    if "cluster.train_rows" in timings:  # written by the cluster step once it reports its split
        assert res["cluster"]["train_rows"] > 0  # the one-pass cluster step ran (faiss)
    else:
        assert res["cluster"] == {}  # no split: the projection scales the whole cluster stage
    dense = P.weights_section(data, P.WeightsVariant("float32", "dense"), instance_epochs=1,
                              max_other_cores=-1.0)
    assert dense["inputs_bytes"]["probs"] > 600 * 20 * 4 and dense["inputs_bytes"]["features"] > 600 * 8 * 4
    # other work over max_other_cores repeats the row once, and the note names the other run
    assert len(dense["attempts"]) == 2 and "repeated" in P.load_note(dense)


def test_weights_variants_leave_out_inputs_too_large_to_write():
    sizes = [D.Size(1_000_000, 5000, 256), D.Size(4_000_000, 5000, 256), D.Size(1_000_000, 5000, 2048)]
    kinds = {s: [(v.dtype, v.probs) for v in P.weights_variants(s, sizes)] for s in sizes}
    assert kinds[sizes[0]] == [("float16", "ids")]  # dense (n, C) would be 20 GB
    assert kinds[sizes[1]] == [("float16", "ids"), ("float32", "ids")]  # 4.1 GB of float32 features
    assert kinds[sizes[2]] == [("float16", "ids")]  # 8.2 GB of float32 features
    notes = [n for s in sizes for n in P.skipped_variants(s, sizes)]
    assert len(notes) == 3 and all("not run" in n for n in notes)
    # with 16M in the series, float32 runs at the largest N where it fits (4M), not at none
    series = sizes[:2] + [D.Size(16_000_000, 5000, 256)]
    assert ("float32", "ids") in [(v.dtype, v.probs) for v in P.weights_variants(series[1], series)]
    assert [v.dtype for v in P.weights_variants(series[2], series)] == ["float16"]
    assert "float32 runs at N=4,000,000 instead" in " ".join(P.skipped_variants(series[2], series))
    small = [D.Size(1000, 20, 8), D.Size(4000, 20, 8)]
    assert [(v.dtype, v.probs) for v in P.weights_variants(small[0], small)] == [("float16", "ids"), ("float16", "dense")]


def test_cluster_problems_and_timing():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    m = np.array([[18, 2, 0], [0, 19, 1], [5, 0, 15]])
    probs = K.cluster_problems(labels, m, top_k=1)
    assert [set(labels[p]) for p in probs] == [{0, 1}, {1, 2}, {2, 0}]
    x = rng.normal(size=(60, 4)).astype(np.float32)
    calls = iter(np.arange(0, 100, 0.5))
    timing = K.time_kmeans_backends(x, probs, 3, backends=["sklearn"], repeats=2, timer=lambda: next(calls))
    assert timing["backend"].tolist() == ["sklearn"]
    assert timing["seconds"].iloc[0] == pytest.approx(0.5)
    assert timing["rows"].iloc[0] == 120
    assert np.isfinite(timing["mean_inertia"].iloc[0])
    assert "sklearn" in K.available_kmeans_backends()


def test_stage_seconds_read_the_timings_and_their_splits_when_present():
    plain = {"validate_features": 1.0, "cluster": 3.0, "instance": 2.0, "file_hash": 0.5}
    seconds, splits = P.stage_seconds(plain, wall=10.0)
    assert seconds == {**plain, "other": pytest.approx(3.5)}
    assert splits == {"cluster": {}, "instance": {}}
    full = {**plain, "cluster.train_s": 1.0, "cluster.train_rows": 1280, "cluster.assign_s": 1.5,
            "instance.train_s": 1.2, "instance.score_s": 0.6, "instance.train_steps": 40,
            "instance.fastest_epoch_s": 0.1, "instance.epoch_steps": 4}
    seconds, splits = P.stage_seconds(full, wall=10.0)
    assert set(seconds) == set(plain) | {"other"}  # split keys are not stages
    assert splits["cluster"] == {"train": 1.0, "train_rows": 1280, "assign": 1.5}
    assert splits["instance"] == {"train": 1.2, "score": 0.6, "train_steps": 40, "fastest_epoch": 0.1,
                                  "epoch_steps": 4}


def test_launcher_records_the_childs_exit_code_wall_and_peak_rss(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "launch.json"
    code = "import sys; b = bytearray(200 << 20); sys.exit(3)"  # ~200 MB, then exit code 3
    proc = subprocess.run([sys.executable, "-m", "urnet_core.benchmarks.launch", str(out), "-c", code])
    meta = json.loads(out.read_text())
    assert proc.returncode == 3 and meta["status"] == 3 and meta["wall"] > 0
    assert meta["ru_maxrss_bytes"] > 200e6
    assert meta["cpu"]["child_s"] >= 0 and "other_cores" in meta["cpu"]


def test_cpu_share_separates_the_childs_cpu_from_other_work():
    from urnet_core.benchmarks.launch import cpu_share

    # 10 s of wall on 2 cores: the machine was busy 18 s, the child used 12 s, the launcher 1 s
    share = cpu_share(10.0, 12.0, (100.0, 5.0), (118.0, 6.0), own_cpu=1.0)
    assert share["other_cores"] == 0.5 and share["steal_cores"] == 0.1 and share["machine_busy_s"] == 18.0
    assert cpu_share(10.0, 12.0, None, None)["other_cores"] is None  # no /proc/stat: unknown, not 0
    quiet = {"cpu": {"other_cores": 0.02, "steal_cores": 0.01}}
    busy = {"cpu": {"other_cores": 0.9, "steal_cores": 0.1}, "max_other_cores": 0.25}
    assert P.contention(quiet) == 0.03 and P.contention(busy) == 1.0
    assert P.contention({}) != P.contention({})  # NaN: never triggers a repeat
    size = D.Size(10, 2, 2)
    assert "otherwise idle" in R.contention_lines([(size, quiet)])[0]
    line = R.contention_lines([(size, quiet), (size, busy)])[0]
    assert "0.03 to 1.00 cores" in line and "upper bounds" in line
    assert R.contention_lines([(size, {})]) == []


def test_projection_follows_stage_models():
    def res(n, scale):
        return {"variant": {"dtype": "float16", "probs": "ids"}, "read_pass": 1e-6 * n,
                "seconds": {"validate_features": 1e-6 * n, "instance": 50 + 2e-6 * n, "cluster": 20 + 1e-6 * n,
                            "other": 1.0, "import_torch": 2.5},
                "cluster": {"train": 20.0 * scale, "assign": 1e-6 * n, "train_rows": 1}}

    pipe = [(D.Size(n, 5000, 256), res(n, min(1.0, n / 1e6))) for n in (100_000, 1_000_000, 4_000_000)]
    big = [5000] * 5000  # problems of 5000 rows at N_max: already past the 1280-row cap
    proj = P.projection(pipe, problem_rows={4_000_000: big})
    st = proj["stages"]
    assert proj["exact_setting"]
    assert st["validate_features"]["seconds"] == pytest.approx(16.0)  # linear x4
    assert st["other"]["seconds"] == pytest.approx(4.0)
    assert st["import_torch"]["seconds"] == pytest.approx(2.5)  # fixed: kept as measured
    assert proj["linear_bound"] - proj["seconds"] >= 3 * 2.5  # ... while the bound scales it
    assert st["instance"]["seconds"] == pytest.approx(50 + 2e-6 * 16e6, rel=1e-6)  # affine fit
    assert st["cluster"]["train"] == pytest.approx(20.0)  # fixed: training rows do not grow
    assert st["cluster"]["assign"] == pytest.approx(16.0)
    assert proj["read_pass_16m"] == pytest.approx(16.0)
    for k, v in st.items():  # never below the measurement at N_max
        assert v["seconds"] >= v["measured"] - 1e-9, k
    assert proj["linear_bound"] >= proj["seconds"]
    assert not proj["measured"]
    # a series that reaches 16M is the measurement itself: every model x1, no projection
    pipe16 = pipe + [(D.Size(16_000_000, 5000, 256), res(16_000_000, 1.0))]
    measured = P.projection(pipe16, problem_rows={16_000_000: big})
    assert measured["measured"] and measured["from"]["N_max"] == 16_000_000
    assert measured["seconds"] == pytest.approx(sum(pipe16[-1][1]["seconds"].values()))
    assert measured["seconds"] == pytest.approx(measured["linear_bound"])
    row = {"section": "pipeline", "item": "urnet weights [float16, class ids]", "N": 16_000_000, "C": 5000,
           "D": 256, "seconds": measured["seconds"], "peak_rss_gb": 1.0}
    targets = R.evaluate_targets(R.make_table([row]), measured)
    assert "measured at N=16,000,000" in targets[0]["value"]
    assert targets[0]["result"] == ("PASS" if measured["seconds"] <= 300 else "FAIL")


def test_data_loading_creates_a_missing_cache_dir(tmp_path):
    cache = tmp_path / "fresh" / "urnet-bench"  # as <tmp>/urnet-bench on a new machine
    rows = L.data_loading_section(n_images=6, batch_size=2, workers=0, tmp_dir=cache)
    assert cache.is_dir() and len(rows) == 4 and all(r["images_per_s"] > 0 for r in rows)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("bench")
    settings = S.BenchSettings(
        sizes=[D.Size(600, 20, 8), D.Size(1200, 20, 8)], cache_dir=cache / "not" / "yet",
        backends=["sklearn", "sklearn_sub", "faiss", "faiss_onepass", "torch"],
        max_problems={"sklearn": 5, "sklearn_sub": 5}, instance_epochs=1, train_steps=2, train_warmup=1,
        train_epochs=1, train_reps=2,
        train_setups=((50, "small_cnn", 28, True),), data_images=12, data_batch_size=4, data_workers=0, isolate=False, progress=False,
    )
    table, pipe, proj = S.run_bench(settings)
    return settings, table, pipe, proj


def test_table_rows_columns_and_numbers(tiny_run):
    _, table, pipe, proj = tiny_run
    assert list(table.columns[:2]) == ["section", "item"]
    assert set(table["section"]) == {"kmeans", "pipeline", "train", "data"}
    km = table[table["section"] == "kmeans"]
    assert sorted(km["item"].unique()) == ["faiss", "faiss_onepass", "sklearn", "sklearn_sub", "torch"]
    assert len(km) == 10
    assert km["measured_on"].str.fullmatch(r"\d+ of 20 problems").all()
    assert (km[km["item"] == "sklearn"]["measured_on"] == "5 of 20 problems").all()
    for col in ("seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub", "inertia_vs_sklearn"):
        assert np.isfinite(km[col].astype(float)).all() and (km[col] > 0).all(), col
    assert np.isfinite(km["exponent"].astype(float)).all()  # any sign at tiny sizes (timer noise)
    assert np.allclose(km[km["item"] == "sklearn"]["inertia_vs_sklearn"], 1.0)
    pl = table[(table["section"] == "pipeline") & table["item"].str.startswith("urnet weights")]
    # 600: float16 ids + dense probs; 1200 (largest): float16 ids + float32 ids
    assert sorted(pl["item"]) == sorted(["urnet weights [float16, class ids]"] * 2
                                        + ["urnet weights [float16, dense (n, C) probs]",
                                           "urnet weights [float32, class ids]"])
    for col in ("seconds", "peak_rss_gb"):
        assert np.isfinite(pl[col].astype(float)).all() and (pl[col] > 0).all(), col
    assert pl["note"].str.contains("validate_features").all()
    if all(r.get("cluster") for _, r in pipe):  # the cluster step wrote its split into weights.json
        assert pl["note"].str.contains("assign pass").all()
    assert proj is not None and proj["seconds"] > 0 and not proj["exact_setting"]
    assert table["item"].str.startswith("projection").sum() == 1
    tr = table[table["section"] == "train"]
    assert len(tr) == 4 and (tr["seconds"] > 0).all()
    assert np.isfinite(tr["ratio_vs_ce"].dropna().astype(float)).all() and tr["ratio_vs_ce"].notna().sum() == 2
    assert tr["note"].str.contains("over 2 repetitions").any()
    dl = table[table["section"] == "data"]
    assert len(dl) == 4 and (dl["images_per_s"] > 0).all() and (dl["workers"] == 0).all()
    md = R.to_markdown(table)
    assert md.count("\n") == len(table) + 1 and "| kmeans | faiss |" in md


def test_targets_and_report_written(tiny_run, tmp_path):
    settings, table, pipe, proj = tiny_run
    targets = R.evaluate_targets(table, proj)
    assert [t["target"] for t in targets] == list(R.TARGETS.values())
    assert all(t["result"].split()[0] in ("PASS", "FAIL", "n/a") for t in targets)
    assert targets[0]["result"] == "n/a" and targets[1]["result"] == "n/a"  # not the 5000/256 setting
    fig_path = tmp_path / "figures" / "benchmark_scaling.png"
    R.save_figure(R.scaling_figure(table, proj), fig_path)
    assert fig_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sections = set(table["section"])
    assert len(R.scaling_figure(table, proj).axes) == len(sections & {"kmeans", "pipeline"})
    only_pipe = table[table["section"] == "pipeline"]
    assert len(R.scaling_figure(only_pipe, proj).axes) == 1  # no empty k-means panel
    rows = [{"section": "pipeline", "item": "urnet weights [float16, class ids]", "N": n, "C": 5000, "D": 256,
             "seconds": t, "peak_rss_gb": 1.0} for n, t in ((4_000_000, 250.0), (16_000_000, 314.0))]
    for n_max, label in ((16_000_000, "16M measured"), (4_000_000, "projection to 16M")):
        fig = R.scaling_figure(R.make_table(rows), {"seconds": 314.0, "from": {"C": 5000, "D": 256, "N_max": n_max}})
        labels = fig.axes[0].get_legend_handles_labels()[1]
        assert any(lab.startswith(label) for lab in labels), labels
    report = {"sizes": settings.sizes, "sections": settings.sections, "backends": ["sklearn", "faiss", "torch"],
              "max_problems": settings.max_problems, "instance_epochs": 1, "pipeline_backend": "auto",
              "wall_seconds": 1.0}
    out = R.write_report(tmp_path / "benchmarks.md", table, targets, R.machine_info(), settings=report,
                         figure_path=fig_path, proj=proj, pipe=pipe)
    text = out.read_text()
    for needle in ("## Machine", "cores", "torch", "faiss", "scikit-learn", "| section | item |",
                   "## urnet weights, end to end", "validate_features", "peak_rss_gb", "### Projection",
                   "## Targets", "PASS" if "PASS" in str(targets) else "n/a", "figures/benchmark_scaling.png"):
        assert needle in text
    assert not list(tmp_path.glob(".*.tmp*"))  # atomic writes leave no temporaries
    # a series measured at 16M itself: its stages, said to be measured, and no projection models
    text = R.write_report(tmp_path / "measured.md", table, targets, R.machine_info(), settings=report,
                          figure_path=fig_path, proj=dict(proj, measured=True), pipe=pipe).read_text()
    assert "### 16M x 5000 x 256, measured" in text and "### Projection" not in text and "(no model applied)" in text


def test_cli_registers_and_rejects_bad_sizes(capsys):
    from urnet_core.cli import get_parser, main

    args = get_parser().parse_args(["bench", "--quick", "--sizes", "1e4x100x16"])
    assert args.quick and callable(args.func)
    assert main(["bench", "--sizes", "1e4x100"]) == 1
    assert "NxCxD" in capsys.readouterr().err
    assert main(["bench", "--sections", "kmeans,nope"]) == 1


# --------------------------------------------------------------------------- the written reports' tables
REPORTS = Path(__file__).resolve().parents[1] / "reports"


@pytest.mark.parametrize("name", ["benchmarks.md", "benchmarks_gpu.md"])
def test_committed_reports_have_one_cell_per_header(name):
    from urnet_core.benchmarks.report import markdown_tables

    path = REPORTS / name
    if not path.is_file():
        pytest.skip(f"no {name}")
    tables = markdown_tables(path.read_text())
    assert tables, f"{name}: no table found"
    for table in tables:
        for row in table["rows"]:
            assert len(row) == len(table["header"]), (name, table["header"][:3], row[:3])
    all_rows = [t for t in tables if t["header"][:2] == ["section", "item"]]
    assert all_rows, f"{name}: no 'All rows' table"
    header = all_rows[0]["header"]
    for row in all_rows[0]["rows"]:
        cells = dict(zip(header, row))
        if cells["section"] == "kmeans":  # the notes sit under note, not under images_per_s
            assert "problems" in cells["measured_on"] and cells.get("images_per_s", "") == "", row


def test_markdown_writer_round_trips_and_short_rows_are_placed_or_refused():
    from urnet_core.benchmarks.report import (make_table, markdown_tables, realign_row, rerender_markdown,
                                              table_from_markdown, to_markdown)

    rows = [{"section": "kmeans", "item": "faiss", "N": 1000, "C": 10, "D": 8, "seconds": 1.5, "peak_rss_gb": 0.2,
             "measured_on": "10 of 10 problems", "note": "a | b\nc"},
            {"section": "data", "item": "jpeg", "seconds": 2.0, "images_per_s": 500.0, "workers": 2, "note": "x"}]
    text = to_markdown(make_table(rows))
    (table,) = markdown_tables(text)
    assert all(len(r) == len(table["header"]) for r in table["rows"])
    back = table_from_markdown(text)
    assert back.loc[0, "note"] == "a / b c" and back.loc[1, "images_per_s"] == 500.0 and back.loc[0, "N"] == 1000
    # A k-means row pasted from a k-means-only report (12 cells) goes under its own columns.
    header = ["section", "item", "N", "C", "D", "seconds", "speedup_vs_sklearn", "speedup_vs_sklearn_sub",
              "inertia_vs_sklearn", "peak_rss_gb", "ratio_vs_ce", "images_per_s", "workers", "measured_on", "note"]
    short = ["kmeans", "faiss", "1,000", "10", "8", "1.5", "2", "1", "0.99", "0.2", "10 of 10 problems", "all"]
    placed = dict(zip(header, realign_row(header, short)))
    assert placed["measured_on"] == "10 of 10 problems" and placed["note"] == "all" and placed["images_per_s"] == ""
    with pytest.raises(ValueError, match="not known"):
        realign_row(header, ["train", "step", "1"])  # never guessed
    md = "| " + " | ".join(header) + " |\n|" + "|".join("---" for _ in header) + "|\n| " + " | ".join(short) + " |"
    fixed = rerender_markdown(md)
    assert [len(r) for r in markdown_tables(fixed)[0]["rows"]] == [len(header)]


def test_instance_stage_is_compared_with_its_floors():
    assert P.instance_train_floor(8, text_dim=6, batch_size=4, steps=5) > 0
    note = P.instance_floor_note({"train": 10.0, "train_steps": 1000, "score": 3.0},
                                 {"instance_floor_steps_s": 200.0, "read_pass": 1.5})
    assert "100 steps/s = 2.00x the floor" in note and "scoring = 2.00x one read pass" in note
    assert P.instance_floor_note({"train": 1.0, "train_steps": 0, "score": 1.0}, {}) == ""


def test_floors_keep_the_fastest_of_their_repeats(monkeypatch):
    import types

    # three timings of one step / one chunk each: 1 s, 0.5 s, 2 s -> the floor is the 0.5 s one
    clock = iter([0.0, 1.0, 10.0, 10.5, 20.0, 22.0] * 2)
    monkeypatch.setattr(P, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    assert P.instance_train_floor(8, text_dim=6, batch_size=4, steps=1, repeats=3) == pytest.approx(2.0)
    assert P.instance_score_floor(8, text_dim=6, rows=4, reps=1, repeats=3) == pytest.approx(0.5 / 4)


def test_instance_floors_and_their_targets():
    assert P.instance_score_floor(8, text_dim=6, rows=64, reps=1) > 0
    res = {"instance": {"train": 10.0, "train_steps": 1000, "score": 3.0}, "instance_floor_steps_s": 120.0,
           "read_pass": 2.0, "instance_score_floor_s_per_row": 1e-6}
    floors = P.instance_floors(res, 1_000_000)
    assert floors == pytest.approx({"train_ratio": 1.2, "score_vs_read": 1.5, "score_vs_arithmetic": 3.0})
    assert "3.00x its arithmetic alone (1.00 us/row" in P.instance_floor_note(res["instance"], res, 1_000_000)
    assert P.instance_floors({"instance": {}}, 10) == {}
    proj = {"seconds": 290.0, "linear_bound": 400.0, "from": {"C": 5000, "D": 256, "N_max": 4_000_000},
            "exact_setting": True, "cluster_16m": 28.0, "read_pass_16m": 9.0,
            "stages": {"cluster": {"train": 15.0, "assign": 10.0}}, "instance_floors": dict(floors, score_vs_read=4.0)}
    table = R.make_table([{"section": "pipeline", "item": "urnet weights", "N": 1, "C": 2, "D": 3, "seconds": 1.0,
                           "peak_rss_gb": 1.0}])
    targets = {t["target"]: t["result"] for t in R.evaluate_targets(table, proj)}
    assert targets[R.TARGETS["projected_16m_minutes"]] == "PASS"  # 4.8 min <= 5
    assert targets[R.TARGETS["cluster_16m"]] == "PASS"
    assert targets[R.TARGETS["instance_train"]] == "PASS"
    assert targets[R.TARGETS["instance_score"]] == "FAIL"  # 4.0x > 3x
    proj["seconds"] = 301.0
    targets = {t["target"]: t["result"] for t in R.evaluate_targets(table, proj)}
    assert targets[R.TARGETS["projected_16m_minutes"]] == "FAIL"
    # with its fastest epoch, the training is judged like with like (fastest against fastest)
    res["instance"].update(fastest_epoch=0.1, epoch_steps=10)  # 100 steps/s at its best, as on average
    drift = dict(res, instance=dict(res["instance"], train=20.0))  # the whole run at half that rate
    floors = P.instance_floors(drift, 1_000_000)
    assert floors["train_ratio"] == pytest.approx(2.4) and floors["train_ratio_best"] == pytest.approx(1.2)
    target = next(t for t in R.evaluate_targets(table, dict(proj, instance_floors=floors))
                  if t["target"] == R.TARGETS["instance_train"])
    assert target["result"] == "PASS" and "2.40x over the whole training" in target["value"]
    assert "its fastest epoch 100 steps/s = 1.20x" in P.instance_floor_note(drift["instance"], drift)
