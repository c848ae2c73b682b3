"""Results tables: mean +- std over seeds of test metrics, rendered for a terminal or a file."""

from __future__ import annotations

import pandas as pd
from rich.markup import escape
from rich.table import Table
from tabulate import tabulate

DEFAULT_METRICS = ("Recall@10", "NDCG@10", "Recall@20", "NDCG@20", "Recall@50", "NDCG@50")


def records_frame(records: list[dict], split: str = "test") -> pd.DataFrame:
    rows = []
    for r in records:
        rows.append({
            "model": r["label"], "dataset": r["dataset"]["name"], "protocol": r["protocol"]["protocol"],
            "seed": r["spec"]["seed"], "best_epoch": r["best_epoch"], **r["metrics"][split],
        })
    return pd.DataFrame(rows)


def summary(records: list[dict], metrics=DEFAULT_METRICS, split: str = "test") -> pd.DataFrame:
    """One row per (dataset, protocol, model): 'mean ± std' strings and the seed count."""
    df = records_frame(records, split)
    keys = ["dataset", "protocol", "model"]
    grouped = df.groupby(keys, sort=False)
    out = grouped.size().rename("seeds").reset_index()
    for m in metrics:
        mean, std = grouped[m].mean().values, grouped[m].std(ddof=1).fillna(0.0).values
        out[m] = [f"{a:.4f} ± {s:.4f}" if n > 1 else f"{a:.4f}" for a, s, n in zip(mean, std, out["seeds"])]
    return out


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
