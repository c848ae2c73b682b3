"""Console tables of ad-hoc records (`bench run`, `bench tune --seeds`, the API): the rows of
bench.report.tables (one aggregation: mean ± std over seeds, values stored or computed from the
stored ranks), formatted as a DataFrame of strings for a terminal (rich) or a file (md, csv, latex)."""

from __future__ import annotations

import pandas as pd
from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

from bench.engine.metrics import DEFAULT_METRICS


def records_frame(records: list[dict], split: str = "test") -> pd.DataFrame:
    """One row per run (no aggregation): model, dataset, protocol, seed, best epoch, its metrics."""
    rows = []
    for r in records:
        rows.append({
            "model": r["label"], "dataset": r["dataset"]["name"], "protocol": r["protocol"]["protocol"],
            "seed": r["spec"]["seed"], "best_epoch": r["best_epoch"], **r["metrics"][split],
        })
    return pd.DataFrame(rows)


def summary(records: list[dict], metrics=DEFAULT_METRICS, split: str = "test", store=None) -> pd.DataFrame:
    """One row per (dataset, protocol, model): 'mean ± std' strings and the seed count. A metric
    the records do not hold is computed from the ranks stored in `store`."""
    from bench.report.tables import cell_text, records_rows
    from bench.report.values import RunValues

    rows = records_rows(records, metrics, split, RunValues(store))
    return pd.DataFrame([{"dataset": r.dataset, "protocol": r.arm[0], "model": r.label, "seeds": r.n_done,
                          **{m: cell_text(r, m, "text") for m in metrics}} for r in rows],
                        columns=["dataset", "protocol", "model", "seeds", *metrics])


def render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "md":
        return tabulate(df, headers="keys", tablefmt="github", showindex=False)
    if fmt == "latex":
        return tabulate(df, headers="keys", tablefmt="latex_booktabs", showindex=False)
    raise ValueError(f"unknown format {fmt!r}; valid: md, csv, latex")


def rich_table(df: pd.DataFrame, title: str) -> Table:
    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="left" if df[col].dtype == object else "right")
    for row in df.itertuples(index=False):
        table.add_row(*(escape(str(v)) for v in row))  # labels like "MSM4SR [zero_shot]" are not markup
    return table
