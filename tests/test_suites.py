"""Suites: cells, sharding, reruns that execute nothing, budgets, tables with marks, figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from bench.cli.main import app
from bench.engine.runner import RunEnv, run_hash
from bench.errors import BenchError
from bench.experiment.experiment import Experiment, parse_shard, shard
from bench.experiment.suites import cells, list_suites, load_suite, select
from bench.plugins import get_model_class
from bench.report.tables import build_table, render

TINY = {"protocol.max_users": 200, "protocol.max_len": 20, "trainer.epochs": 1}


@pytest.fixture
def env(tmp_path, data_root, cache):
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(cache)
    return RunEnv(data_root, home)


def write_suite(tmp_path: Path, **fields) -> Path:
    data = {
        "name": "tiny", "title": "Tiny", "datasets": ["scientific"], "models": ["pop", "sasrec"],
        "seeds": [0, 1], "overrides": {**TINY, "sasrec.layers": 1, "sasrec.hidden": 32},
        "quick": {"seeds": [0], "overrides": {"trainer.epochs": 1}},
        **fields,
    }
    path = tmp_path / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_shipped_suites_load_and_expand():
    assert {"main", "ablation", "sensitivity"} <= set(list_suites())
    for name in list_suites():
        suite = load_suite(name)
        all_cells = cells(suite)
        assert len(all_cells) == len(suite.all_variations()) * len(suite.models) * len(suite.datasets) * len(suite.seeds)
        for c in all_cells[:: max(1, len(all_cells) // 7)]:
            c.spec(suite.protocol)  # every override is valid for its model
        suite.reference_arm()
        assert len(cells(suite, "quick")) < len(all_cells)
    ablation = load_suite("ablation")
    assert ablation.reference_arm() == ("full", "msm4sr")
    specs = {c.variation: c.spec(ablation.protocol) for c in cells(ablation) if c.seed == 0}
    assert specs["w/o mixup"].model_params["mixup"] is False
    assert specs["w/o image"].model_params["modalities"] == ("text",)
    assert set(specs["w/o pre-training"].trainer) == {"pretrain", "finetune"}
    sens = load_suite("sensitivity")
    names = {c.variation for c in cells(sens)}
    assert {"n_keywords=5", "tau=0.2", "cmcl_weight=0.1"} <= names


def test_include_deep_merges_beneath_the_including_file(tmp_path):
    # a chain: tiny.yaml includes _mid.yaml and _extra.yaml; _mid.yaml includes shared/_base.yaml
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "_base.yaml").write_text(yaml.safe_dump({
        "quick": {"seeds": [0, 1, 2], "training": {"*": {"epochs_cap": 3, "patience_cap": 3}},
                  "overrides": {"protocol.max_users": 100, "trainer.lr": 0.01}},
        "cpu": {"training": {"*": {"epochs_cap": 50, "patience_cap": 5}}}}))
    (tmp_path / "_mid.yaml").write_text(yaml.safe_dump({
        "include": "shared/_base.yaml",  # relative to the including file
        "quick": {"training": {"*": {"patience_cap": 2}}}, "metrics": ["Recall@10", "NDCG@10"]}))
    (tmp_path / "_extra.yaml").write_text(yaml.safe_dump({"cpu": {"seeds": [4]}, "metrics": ["Recall@50"]}))
    path = write_suite(tmp_path, include=["_mid.yaml", "_extra.yaml"],
                       quick={"seeds": [0], "overrides": {"protocol.max_users": 300}})
    suite = load_suite(str(path))
    # mappings merge key by key, the including file winning; lists are replaced, never concatenated
    assert suite.quick.seeds == [0]
    assert suite.quick.overrides == {"protocol.max_users": 300, "trainer.lr": 0.01}
    assert (suite.quick.training["*"].epochs_cap, suite.quick.training["*"].patience_cap) == (3, 2)
    assert suite.metrics == ["Recall@50"]  # of the later include
    assert suite.cpu.seeds == [4] and suite.cpu.training["*"].epochs_cap == 50
    assert suite.seeds == [0, 1] and suite.models == ["pop", "sasrec"]  # the suite's own


def test_include_cycles_and_missing_files_are_one_clear_line(tmp_path):
    (tmp_path / "_a.yaml").write_text("include: _b.yaml\n")
    (tmp_path / "_b.yaml").write_text("include: [_a.yaml]\n")
    with pytest.raises(BenchError, match=r"include cycle: tiny\.yaml -> _a\.yaml -> _b\.yaml -> _a\.yaml$"):
        load_suite(str(write_suite(tmp_path, include="_a.yaml")))
    with pytest.raises(BenchError, match=r"include cycle: tiny\.yaml -> tiny\.yaml"):
        load_suite(str(write_suite(tmp_path, include="tiny.yaml")))
    with pytest.raises(BenchError, match=r"tiny\.yaml: include '_none\.yaml': no such file .*_none\.yaml"):
        load_suite(str(write_suite(tmp_path, include="_none.yaml")))
    with pytest.raises(BenchError, match="include: a file name"):
        load_suite(str(write_suite(tmp_path, include={"file": "_a.yaml"})))
    (tmp_path / "_list.yaml").write_text("- 1\n")
    with pytest.raises(BenchError, match=r"_list\.yaml: a suite is a mapping"):
        load_suite(str(write_suite(tmp_path, include="_list.yaml")))
    # through the command: exit 2 and one `error:` line
    write_suite(tmp_path, include="_a.yaml")
    proc = subprocess.run([sys.executable, "-m", "bench", "suite", "run", str(tmp_path / "tiny.yaml"), "--dry-run",
                           "--home", str(tmp_path / "home")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "include cycle" in proc.stderr, proc.stderr


def test_shipped_suites_share_their_budget_blocks():
    from bench.experiment.suites import SUITES_DIR, suite_path

    shared = sorted(p.name for p in SUITES_DIR.glob("_*.yaml"))
    assert shared and not set(list_suites()) & {n.removesuffix(".yaml") for n in shared}  # not suites
    with pytest.raises(BenchError, match="unknown suite"):
        suite_path("_budgets")
    smoke = {"*": {"epochs_cap": 3, "patience_cap": 3, "respect_need": False}}
    for name in list_suites():
        text = (SUITES_DIR / f"{name}.yaml").read_text()
        assert "include: _budgets" in text and "epochs_cap: 3" not in text, name  # one copy, included
        suite = load_suite(name)
        assert {k: v.model_dump() for k, v in suite.quick.training.items()} == smoke, name
    assert set(load_suite("main").cpu.training) == {"*", "pretrain"}
    assert set(load_suite("ablation").cpu.training) == {"*"}  # early stopping ends its runs, no pretrain cap


def test_sharding_partitions_cells(tmp_path):
    suite = load_suite(str(write_suite(tmp_path, models=["pop", "sasrec", "gru4rec"], seeds=[0, 1, 2])))
    all_cells = cells(suite)
    assert [c.index for c in all_cells] == list(range(len(all_cells)))
    for n in (1, 2, 4, 7):
        parts = [shard(all_cells, k, n) for k in range(1, n + 1)]
        flat = sorted(c.index for p in parts for c in p)
        assert flat == list(range(len(all_cells)))  # disjoint and covering
        assert all(c.index % n == k - 1 for k, p in enumerate(parts, 1) for c in p)
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) == (1, 1)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(BenchError):
            parse_shard(bad)


def test_model_selection_shards_only_those_cells(tmp_path):
    suite = load_suite(str(write_suite(tmp_path, models=["pop", "sasrec", "gru4rec"], seeds=[0, 1, 2])))
    parts = [shard(select(suite, "full", ["gru4rec", "pop"]), k, 2) for k in (1, 2)]
    chosen = sorted(c.index for p in parts for c in p)
    assert chosen == sorted(c.index for c in cells(suite) if c.model in ("gru4rec", "pop"))
    assert abs(len(parts[0]) - len(parts[1])) <= 1  # balanced over the selection, not the whole suite
    with pytest.raises(BenchError, match="--models bert4rec: not in suite"):
        select(suite, "full", ["bert4rec"])
    assert {c.dataset for c in select(suite, "full", None, ["scientific"])} == {"scientific"}
    with pytest.raises(BenchError, match="--datasets office: not in suite"):
        select(suite, "full", None, ["office"])
    cross = load_suite("cross_domain")
    picked = select(cross, "cpu", ["msm4sr"], ["office"], ["zero_shot"])
    assert [(c.variation, c.model, c.dataset) for c in picked] == [("zero_shot", "msm4sr", "office")] * 3


def test_dataset_overrides_apply_per_dataset(tmp_path):
    path = write_suite(tmp_path, datasets=["scientific", "office"],
                       dataset_overrides={"office": {"sasrec.dropout": 0.4}})
    by_dataset = {c.dataset: c.spec("leave_one_out").model_params for c in cells(load_suite(str(path)))
                  if c.model == "sasrec"}
    assert by_dataset["office"]["dropout"] == 0.4 and by_dataset["scientific"]["dropout"] != 0.4
    with pytest.raises(BenchError, match="dataset_overrides name datasets"):
        load_suite(str(write_suite(tmp_path, dataset_overrides={"office": {}})))
    cross = load_suite("cross_domain")
    targets = {(c.dataset, c.spec(cross.protocol).dataset) for c in cells(cross, "cpu")}
    assert targets == {("scientific", "scientific"), ("office", "office")}


def test_suite_rerun_executes_nothing_and_budget_is_labelled(tmp_path, env):
    path = write_suite(tmp_path)
    suite = load_suite(str(path))
    first = Experiment.of_suite(suite, "full").run(env)
    assert len(first.executed) == 4 and not first.complete and not first.failed
    second = Experiment.of_suite(suite, "full").run(env)
    assert second.executed == [] and sorted(second.complete) == sorted(first.executed)
    # shards on "two machines" into the same store: nothing left to do either
    assert Experiment.of_suite(suite, "full", (2, 2)).run(env).executed == []
    # the quick budget is a different set of cells (seed 0 only), labelled as such
    result = CliRunner().invoke(app, ["suite", "run", str(path), "--budget", "quick", "--home", str(env.home),
                                      "--data-root", str(env.data_root)])
    assert result.exit_code == 0, result.output
    assert "quick budget" in result.output and "executed 0" in result.output  # same specs as full seed 0
    result = CliRunner().invoke(app, ["suite", "run", str(path), "--home", str(env.home),
                                      "--data-root", str(env.data_root)])
    assert "executed 0" in result.output and "already complete 4" in result.output
    runs = [json.loads(line) for line in (env.home / "suite_runs.jsonl").read_text().splitlines()]
    assert [(r["budget"], r["executed"]) for r in runs] == [("quick", 0), ("full", 0)]
    # a real table from those runs
    table = build_table(suite, env.store, "quick")
    assert "quick budget" in table.caption and all(r.n_done == 1 for r in table.rows)


def _fake_record(spec, metrics: dict, history: list[float]) -> dict:
    return {
        "status": "complete", "label": get_model_class(spec.model).label, "spec": spec.model_dump(),
        "metrics": {"valid": metrics, "test": metrics},
        "history": {"train": [{"epoch": i, "Recall@20": v} for i, v in enumerate(history)]},
    }


def save_fake_runs(suite, env, per_user_of) -> dict:
    """Save a fake complete record for every cell; per_user_of(cell) -> {metric: array}."""
    hashes = {}
    for c in cells(suite):
        spec = c.spec(suite.protocol)
        key = run_hash(spec, env)
        arrays = per_user_of(c)
        means = {m: float(v.mean()) for m, v in arrays.items()}
        env.store.save(key, _fake_record(spec, means, [0.01 * (i + 1) for i in range(3)]),
                       {"valid": arrays, "test": arrays})
        hashes[(c.arm, c.seed)] = key
    return hashes


def test_a_reference_arm_with_another_arms_runs_is_still_the_reference(tmp_path, env):
    # a tuned variation before anything is tuned runs exactly the defaults: one row per model,
    # and the other models are still tested against the reference (the tuned arm)
    path = write_suite(tmp_path, variations={"default": {}, "tuned": {}}, metrics=["Recall@20"],
                       params_from={"tuned": str(tmp_path / "none-{model}.json")},
                       reference={"model": "sasrec", "variation": "tuned"})
    suite = load_suite(str(path))
    level = {"pop": 0.05, "sasrec": 0.3}
    save_fake_runs(suite, env, lambda c: {"Recall@20": (np.random.default_rng(c.seed).random(200) < level[c.model])
                                          .astype(float)})
    table = build_table(suite, env.store, "full")
    assert [r.arm for r in table.rows] == [("default", "pop"), ("tuned", "sasrec")]
    assert [c["model"] for c in table.comparisons] == ["pop"] and "sig" in table.rows[0].marks["Recall@20"]


def test_table_marks_best_second_and_significance(tmp_path, env):
    path = write_suite(tmp_path, models=["pop", "sasrec", "gru4rec"], reference="sasrec",
                       metrics=["Recall@20", "NDCG@20"])
    suite = load_suite(str(path))
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.3).astype(float)
    level = {"sasrec": 0.0, "gru4rec": -0.002, "pop": -0.25}

    def per_user(c):
        noise = np.random.default_rng(c.seed + 10 * c.index).normal(0, 0.01, 200)
        x = np.clip(base + level[c.model] + noise, 0, 1)
        return {"Recall@20": x, "NDCG@20": x / 2}

    hashes = save_fake_runs(suite, env, per_user)
    table = build_table(suite, env.store, "full")
    md = render(table, "md")
    results, _, costs = md.partition("Cost (mean over seeds")
    rows = {line.split("|")[1].split(" ‡")[0].strip(): line for line in results.splitlines()
            if line.startswith("| ") and "Model" not in line}
    # fake records carry no parameters or timings; their 3-epoch curves still rise at the 1-epoch cap
    assert "| SASRec (CE) ‡2/2 | — | — | 1 | — |" in costs  # best epoch beside its cap
    sas, gru, pop = rows["SASRec (CE)"], rows["GRU4Rec (CE)"], rows["Pop"]
    assert "**" in sas and "†" not in sas  # best, and the reference carries no mark
    assert "<u>" in gru and "†" not in gru  # second; not significantly different from the reference
    assert "†" in pop and "**" not in pop and "<u>" not in pop  # clearly worse: significant
    assert " ± " in sas
    assert "paired t-test" in table.caption and "Holm" in table.caption and "SASRec (CE)" in table.caption
    latex = render(table, "latex")
    assert "\\textbf{" in latex and "\\underline{" in latex and "$^{\\dagger}$" in latex and "$\\pm$" in latex
    csv_text = render(table, "csv")
    assert csv_text.splitlines()[1].startswith("dataset,variation,model")
    # the direction of the recorded comparisons: reference minus the other model
    comps = {(c["model"], c["metric"]): c for c in table.comparisons}
    assert comps[("pop", "Recall@20")]["diff"] > 0 and comps[("pop", "Recall@20")]["significant"]
    assert comps[("pop", "Recall@20")]["family_size"] == 2
    # traceability through the CLI's sidecar
    out = tmp_path / "table.md"
    result = CliRunner().invoke(app, ["table", str(path), "--format", "md", "--out", str(out), "--home",
                                      str(env.home), "--data-root", str(env.data_root)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert text.startswith("<!--") and "git revision:" in text and "**" in text and "hardware:" in text
    side = json.loads(Path(f"{out}.cells.json").read_text())
    cell = next(c for c in side["cells"] if c["model"] == "pop")
    assert cell["runs"] == {"0": hashes[(("default", "pop"), 0)], "1": hashes[(("default", "pop"), 1)]}
    assert env.store.load(cell["runs"]["0"])["spec"]["model"] == "pop"


def test_missing_cells_are_shown_not_invented(tmp_path, env):
    suite = load_suite(str(write_suite(tmp_path, reference="sasrec")))
    c = next(c for c in cells(suite) if c.model == "pop" and c.seed == 0)
    spec = c.spec(suite.protocol)
    arrays = {"Recall@10": np.ones(200), "NDCG@10": np.ones(200), "Recall@20": np.ones(200), "NDCG@20": np.ones(200)}
    env.store.save(run_hash(spec, env), _fake_record(spec, {m: 1.0 for m in arrays}, [0.1]),
                   {"valid": arrays, "test": arrays})
    table = build_table(suite, env.store, "full")
    md = render(table, "md")
    assert "(1/2)" in md and "—" in md and "incomplete" in table.caption
    assert table.comparisons == []  # the reference has no complete run: nothing to test


def test_plots_write_png_and_pdf(tmp_path, env):
    path = write_suite(tmp_path, models=["sasrec"], sweeps={"sasrec.dropout": [0.1, 0.3]}, metrics=["Recall@20"])
    suite = load_suite(str(path))
    save_fake_runs(suite, env, lambda c: {"Recall@20": np.full(200, 0.1 + c.index / 100)})
    out_dir = tmp_path / "figs"
    result = CliRunner().invoke(app, ["plot", str(path), "--out-dir", str(out_dir), "--home", str(env.home),
                                      "--data-root", str(env.data_root)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out_dir.iterdir())
    assert "tiny-full-curves-scientific.png" in names and "tiny-full-curves-scientific.pdf" in names
    assert "tiny-full-sensitivity-sasrec_dropout-scientific.png" in names
    assert (out_dir / "tiny-full-curves-scientific.png").read_bytes()[:4] == b"\x89PNG"


def test_figure_arms_look_distinct_and_shared_runs_are_drawn_once(tmp_path):
    from bench.report.plots import arm_style, shared_arms

    suite = load_suite(str(write_suite(tmp_path, variations={"a": {}, "b": {"sasrec.dropout": 0.1}})))
    looks = {tuple(sorted(arm_style(suite, arm).items())) for arm in suite.arms()}
    assert len(looks) == len(suite.arms()) == 4
    labels = shared_arms(suite, {("a", "pop"): {"h1"}, ("b", "pop"): {"h1"},
                                 ("a", "sasrec"): {"h2"}, ("b", "sasrec"): {"h3"}})
    assert labels == {("a", "pop"): "Pop [a, b]", ("a", "sasrec"): "SASRec (CE) [a]",
                      ("b", "sasrec"): "SASRec (CE) [b]"}


def test_tuned_params_apply_and_are_reported(tmp_path, env):
    tuned_dir = tmp_path / "tuned"
    tuned_dir.mkdir()
    (tuned_dir / "sasrec-scientific.json").write_text(json.dumps(
        {"params": {"sasrec.dropout": 0.33, "sasrec.hidden": 32}, "overrides": {}, "budget": {"trials": 5, "timeout_s": None}}
    ))
    path = write_suite(tmp_path, params_from=str(tuned_dir / "{model}-{dataset}.json"),
                       variations={"base": {}, "dropout 0.1": {"sasrec.dropout": 0.1}})
    suite = load_suite(str(path))
    by = {(c.variation, c.model): c for c in cells(suite) if c.seed == 0}
    assert by[("base", "sasrec")].spec(suite.protocol).model_params["dropout"] == 0.33
    assert by[("base", "sasrec")].tuned_from.endswith("sasrec-scientific.json")
    assert by[("dropout 0.1", "sasrec")].spec(suite.protocol).model_params["dropout"] == 0.1  # variation wins
    assert by[("base", "pop")].tuned_from is None
    caption = build_table(suite, env.store, "full").caption
    assert "equal budget" in caption and "untuned" in caption and "Pop" in caption


def test_a_failing_cell_does_not_stop_the_others(tmp_path, env, monkeypatch):
    import bench.engine.runner as runner

    real = runner._run

    def broken_for_pop(spec, *args):
        if spec.model == "pop":
            raise RuntimeError("boom")
        return real(spec, *args)

    monkeypatch.setattr(runner, "_run", broken_for_pop)
    path = write_suite(tmp_path, seeds=[0])
    result = CliRunner().invoke(app, ["suite", "run", str(path), "--home", str(env.home),
                                      "--data-root", str(env.data_root)])
    assert result.exit_code == 1
    assert "executed 1" in result.output and "failed 1" in result.output and "boom" in result.output


def test_stage_curves_only_for_multi_stage_runs(tmp_path, env):
    from bench.report.plots import stage_curves

    path = write_suite(tmp_path, models=["sasrec"], metrics=["Recall@20"])
    suite = load_suite(str(path))
    save_fake_runs(suite, env, lambda c: {"Recall@20": np.full(200, 0.1)})
    assert stage_curves(suite, env.store, "full", tmp_path / "none") == []  # one stage: nothing to draw
    for c in cells(suite):  # the same cells, now with a pre-training stage in their history
        spec = c.spec(suite.protocol)
        record = _fake_record(spec, {"Recall@20": 0.1}, [0.1, 0.2])
        record["history"] = {stage: [{"epoch": i, "loss": 5.0 - i, "Recall@20": 0.1 * i} for i in range(4)]
                             for stage in ("pretrain", "finetune")}
        env.store.save(run_hash(spec, env), record, {"valid": {"Recall@20": np.full(200, 0.1)},
                                                      "test": {"Recall@20": np.full(200, 0.1)}})
    written = stage_curves(suite, env.store, "full", tmp_path / "figs")
    assert sorted(p.name for p in written) == ["tiny-full-stages-scientific.pdf", "tiny-full-stages-scientific.png"]
    assert (tmp_path / "figs" / "tiny-full-stages-scientific.png").read_bytes()[:4] == b"\x89PNG"


def test_run_cost_averages_seeds_per_stage():
    from bench.report.tables import run_cost

    recs = [{"parameters": 10, "best_epoch": b, "timings": {"total_s": 9.0, "pretrain": {"s_per_epoch": p},
                                                          "finetune": {"s_per_epoch": f}},
             "spec": {"model": "msm4sr", "trainer": {"pretrain": {"epochs": 30}, "finetune": {"epochs": cap}}},
             "history": {"finetune": [], "pretrain": []}}
            for b, p, f, cap in ((3, 2.0, 1.0, 50), (5, 4.0, 3.0, 50))]
    assert run_cost(recs) == {"parameters": 10, "best_epoch": 5.0, "epoch_cap": "50",  # the final stage's cap
                              "s_per_epoch": {"pretrain": 3.0, "finetune": 2.0}, "machine": "CPU"}
    recs[1]["spec"]["trainer"]["finetune"]["epochs"] = 200  # seeds under different caps: both shown
    assert run_cost(recs)["epoch_cap"] == "50/200"
    assert run_cost([]) == {}
    # the machine column says where each seed trained: a GPU unless the spec pinned the cpu
    gpu = {"provenance": {"hardware": {"gpu": "NVIDIA H200", "torch_threads": 1}},
           "spec": {"model": "sasrec", "trainer": {"train": {"device": "auto"}}}, "history": {"train": []}}
    pinned = {"provenance": {"hardware": {"gpu": "NVIDIA H200", "torch_threads": 16}},
              "spec": {"model": "sasrec", "trainer": {"train": {"device": "cpu"}}}, "history": {"train": []}}
    assert run_cost([{**recs[0], **gpu}, {**recs[1], **pinned}])["machine"] == "CPU, 16 threads, NVIDIA H200"


def test_a_model_untouched_by_the_variations_is_shown_once(tmp_path, env):
    path = write_suite(tmp_path, models=["sasrec", "gru4rec"], metrics=["Recall@20"],
                       variations={"a": {"gru4rec.dropout": 0.1}, "b": {"gru4rec.dropout": 0.3}})
    suite = load_suite(str(path))
    save_fake_runs(suite, env, lambda c: {"Recall@20": np.full(200, 0.1)})
    labels = [r.label for r in build_table(suite, env.store, "full").rows]
    assert labels == ["SASRec (CE)", "GRU4Rec (CE) [a]", "GRU4Rec (CE) [b]"]


def test_caption_states_the_chance_recall_of_a_random_ranking():
    from bench.report.captions import _chance_note
    from bench.report.tables import SuiteTable

    suite = load_suite("cold_start_item")
    table = SuiteTable(suite, "cpu", [], [], "", n_items={"scientific": 4000})
    assert _chance_note(table) == ["Chance Recall (random ranking) on scientific (4,000 items): "
                                   "@10 0.0025, @20 0.0050, @50 0.0125."]
    assert _chance_note(SuiteTable(suite, "cpu", [], [], "")) == []


def test_split_counts_are_the_definitions_counts_not_its_thresholds():
    from bench.report.tables import split_counts

    definition = {"protocol": "cold_start", "kind": "item", "cold_items": 438, "test_cases": 1822, "users": 8442,
                  "min_cases": 100, "max_users": None, "seed": 0, "item_fraction": 0.1, "candidates": None}
    assert split_counts(definition) == {"cold_items": 438, "test_cases": 1822, "users": 8442}


def test_curves_use_the_final_stage_although_records_sort_their_keys():
    from bench.report.tables import final_stage

    assert final_stage("msm4sr", {"finetune": [], "pretrain": []}) == "finetune"
    assert final_stage("s3rec", {"finetune": [], "pretrain": []}) == "finetune"
    assert final_stage("sasrec", {"train": []}) == "train"


def test_zero_shot_runs_draw_no_validation_curve(tmp_path, monkeypatch):
    """A zero-shot run trained nothing on the target: its only history is the source's pre-training."""
    import bench.report.plots as plots

    suite = load_suite("cross_domain")
    by_mode = {c.variation: c for c in cells(suite, "cpu") if c.model == "msm4sr" and c.dataset == "office"}
    spec = {"trainer": {"pretrain": {"valid_metric": "Recall@20"}, "finetune": {"valid_metric": "Recall@20"}}}
    epochs = [{"loss": 1.0, "Recall@20": 0.1}, {"loss": 0.9, "Recall@20": 0.2}]
    zero_shot = (by_mode["zero_shot"], "k0", {"history": {"pretrain": epochs}, "spec": spec})
    finetuned = (by_mode["transductive"], "k1", {"history": {"pretrain": epochs, "finetune": epochs}, "spec": spec})
    monkeypatch.setattr(plots, "_complete_records", lambda *a: iter([zero_shot]))
    assert plots.validation_curves(suite, None, "cpu", tmp_path) == []
    monkeypatch.setattr(plots, "_complete_records", lambda *a: iter([zero_shot, finetuned]))
    assert len(plots.validation_curves(suite, None, "cpu", tmp_path)) == 2  # one figure, png + pdf


def test_table_says_which_rows_a_budget_trained_below_their_declared_need(tmp_path, env):
    # one epoch for every model: BERT4Rec declares 200 (bench/engine/budgets.py), Pop trains nothing
    path = write_suite(tmp_path, models=["pop", "bert4rec"], metrics=["Recall@20"])
    suite = load_suite(str(path))
    save_fake_runs(suite, env, lambda c: {"Recall@20": np.full(200, 0.1)})
    table = build_table(suite, env.store, "full")
    assert "declared need" in table.caption and "BERT4Rec (train epochs)" in table.caption
    assert "Pop (" not in table.caption


def test_a_budget_raises_one_variations_epochs_past_its_cap(tmp_path):
    """variation_overrides are the budget's own word: the cap does not cut them, the other
    variations keep the cap, and a name that is no variation is refused."""
    fields = {"models": ["sasrec"], "variations": {"base": {}, "long": {"sasrec.layers": 2}},
              "overrides": {"protocol.max_users": 200, "trainer.epochs": 300},
              "cpu": {"training": {"*": {"epochs_cap": 100, "patience_cap": 10}},
                      "variation_overrides": {"long": {"trainer.epochs": 150}}}}
    suite = load_suite(str(write_suite(tmp_path, **fields)))
    epochs = {c.variation: c.spec(suite.protocol).trainer["train"].epochs for c in cells(suite, "cpu")}
    assert epochs == {"base": 100, "long": 150}
    fields["cpu"]["variation_overrides"] = {"lnog": {"trainer.epochs": 150}}
    bad = load_suite(str(write_suite(tmp_path, **fields)))
    with pytest.raises(BenchError, match="variation_overrides names no variation: lnog"):
        cells(bad, "cpu")


def test_row_order_model_keeps_each_models_variations_together(tmp_path):
    path = write_suite(tmp_path, variations={"default": {}, "tuned": {}}, row_order="model")
    assert load_suite(str(path)).arms() == [("default", "pop"), ("tuned", "pop"), ("default", "sasrec"),
                                            ("tuned", "sasrec")]
    assert load_suite(str(write_suite(tmp_path, variations={"default": {}, "tuned": {}}))).arms()[:2] == [
        ("default", "pop"), ("default", "sasrec")]
