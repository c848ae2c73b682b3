"""The words under a suite's table: what it shows, how rows were tested, and what a reader needs
to trust the numbers (cap flags, repeated rows, runs too short, chance level, the split). Each
function reads a bench.report.tables.SuiteTable (not imported: tables imports this module)."""

from __future__ import annotations

from bench.report import stats
from protocols import PROTOCOLS

SIG_MARK = "†"
CAP_MARK = "‡"


def caption(table) -> str:
    s = table.suite
    seeds = sorted({len(r.seeds) for r in table.rows})
    seed_text = "/".join(str(x) for x in seeds)
    parts = [
        f"{s.title} ({table.budget_label}).",
        f"{', '.join(dict.fromkeys(r.dataset for r in table.rows))}; {s.protocol}, test split, full ranking "
        f"({table.ties} ties); mean ± std over {seed_text} seeds.",
        "Best in bold, second best underlined.",
        *_chance_note(table),
        *_split_note(table),
    ]
    ref = s.reference_arm()
    if ref is not None:
        sig = s.significance
        family = ("the comparisons with the reference in each dataset and metric"
                  if sig.family == "per_dataset_metric" else "every comparison in the table")
        parts.append(
            f"{SIG_MARK}: significantly different from {s.arm_label(ref)} "
            f"({stats.caption_text(sig.test, sig.correction, sig.alpha, family)})."
        )
    parts += _tuning_note(table)
    parts += _trust_notes(table)
    missing = [r for r in table.rows if r.n_done < len(r.seeds)]
    if missing:
        parts.append(f"{len(missing)} row(s) incomplete (seeds done shown as k/n).")
    return " ".join(parts)


def _trust_notes(table) -> list[str]:
    """What a reader needs to trust the numbers: runs cut short by an epoch cap, rows that are one
    run, rows that repeat another, how pre-training varies over seeds, image coverage."""
    notes = []
    done = [r for r in table.rows if r.n_done]
    capped = [r for r in done if r.capped]
    cells = sum(r.n_done for r in done)
    notes.append(f"{CAP_MARK} k/n: k of n seeds stopped by the epoch cap while still improving (best epoch "
                 f"within the patience window of the cap); {sum(r.capped for r in capped)} of {cells} runs "
                 f"flagged." if capped else f"No run stopped by its epoch cap while improving ({cells} runs).")
    uncomputed = [f"{r.label}: {'; '.join(r.uncomputed)}" for r in done if r.uncomputed]
    if uncomputed:
        notes.append(f"Not computable from the stored records (shown as —): {' | '.join(uncomputed)}.")
    untested = [r.label for r in done if r.untested]
    if untested:
        notes.append(f"Not tested against the reference (other test users, e.g. after data.dedup): "
                     f"{', '.join(untested)}.")
    below = [f"{r.label} ({', '.join(r.below_need)})" for r in done if r.below_need]
    if below:
        notes.append(f"Trained below the model's declared need by this budget (bench/engine/budgets.py): {'; '.join(below)}.")
    single = [r.label for r in done if r.n_done > 1 and r.distinct == 1]
    if single:
        notes.append(f"One run (every seed gave identical results, nothing seeded trained): {', '.join(single)}.")
    same = [f"{r.label} = {r.same_as}" for r in done if r.same_as]
    if same:
        notes.append(f"Rows with exactly another row's results (the same model), not ranked or tested: "
                     f"{'; '.join(same)}.")
    staged = [r for r in done if len(r.cost.get("s_per_epoch", {})) > 1]
    if staged:
        shared = [r.label for r in staged if r.shared_pretraining]
        notes.append(f"Pre-training shared by every seed (seed 0), so its ± omits pre-training variance: "
                     f"{', '.join(shared)}." if shared else "Each seed has its own pre-training.")
    if table.uses_images and table.coverage:
        notes.append("Image coverage: " + "; ".join(
            f"{d} {c['image']['items']:,} of {c['items']:,} items ({c['image']['interaction_share']:.0%} of "
            f"interactions)" for d, c in table.coverage.items() if "image" in c) + ".")
    return notes


COUNT_WORDS = ("cases", "users", "items", "interactions", "sequences", "targets")


def split_counts(definition: dict) -> dict[str, int]:
    """The integer counts of a protocol definition (cases, users, items... it affects)."""
    return {k: v for k, v in definition.items()
            if isinstance(v, int) and not isinstance(v, bool) and not k.startswith(("min_", "max_"))
            and any(w in k for w in COUNT_WORDS)}


def _split_note(table) -> list[str]:
    """Every model and seed of a cell shares one split (seeded by the protocol): say what it holds."""
    if not PROTOCOLS.get(table.suite.protocol).split_note:  # a standard split the reader knows
        return []
    return [f"Split of {d}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items()) + "."
            for d, counts in table.split_counts.items() if counts]


def _chance_note(table) -> list[str]:
    """What a uniformly random ranking scores: Recall@K = K / items (the floor ID models fall to on
    strict cold items)."""
    ks = [int(m.split("@")[1]) for m in table.metrics if m.startswith("Recall@")]
    if not ks or not table.n_items:
        return []
    parts = [f"{d} ({n:,} items): " + ", ".join(f"@{k} {k / n:.4f}" for k in ks) for d, n in table.n_items.items()]
    return [f"Chance Recall (random ranking) on {'; '.join(parts)}."]


def _tuning_note(table) -> list[str]:
    """Which rows use tuned parameters, whether their tuning budgets were equal, what each study
    searched and what it selected."""
    if not table.suite.params_from:
        return []
    import json

    from bench.experiment.suites import load_best

    summaries = {r.tuned_from: load_best(r.tuned_from) for r in table.rows if r.tuned_from}
    untuned = sorted({r.label for r in table.rows if not r.tuned_from})
    notes = []
    distinct = {json.dumps(s["budget"], sort_keys=True) for s in summaries.values()}
    if len(distinct) == 1:
        notes.append(f"Hyper-parameters tuned on validation with an equal budget ({next(iter(distinct))}), "
                     "Optuna TPE sampler and median pruner for every model.")
    elif distinct:
        notes.append(f"WARNING: tuning budgets differ across rows ({', '.join(sorted(distinct))}).")
    if untuned:
        notes.append(f"Default (untuned) hyper-parameters: {', '.join(untuned)}.")
    selected = []
    for r in table.rows:
        s = summaries.get(r.tuned_from)
        if s is None:
            continue
        trials = s.get("trials", {})
        params = ", ".join(f"{k}={_short(v)}" for k, v in s["params"].items())
        space = f"; searched {', '.join(s['space'])}{_earlier_stages_fixed(r.arm[1], s['space'])}" if s.get("space") else ""
        valid = f"valid {s['metric']} {s['best_value']:.4f}; " if "best_value" in s else ""
        selected.append(f"{r.label} ({r.dataset}): {params} ({valid}{trials.get('complete', 0)} complete, "
                        f"{trials.get('pruned', 0)} pruned trials{space})")
    if selected:
        notes.append("Selected: " + " | ".join(selected) + ".")
    return notes


def _earlier_stages_fixed(model: str, space) -> str:
    """The budget rule of a multi-stage model whose study searched its last stage only."""
    from bench.plugins import get_model_class

    stages = get_model_class(model).stages
    if len(stages) > 1 and all(k.startswith(f"trainer.{stages[-1]}.") for k in space):
        return f", so its {' and '.join(stages[:-1])} is not tuned: every trial reuses one"
    return ""


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
