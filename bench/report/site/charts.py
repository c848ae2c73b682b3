"""Plotly figures of the site. Each page embeds its figures' JSON and draws them with the one
plotly.js copy the site ships in assets/ (no CDN)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

# matplotlib's tab10, so a model keeps the colour it has in the PNG figures of results/
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
# plotly's default template adds ~7 KB to every figure; a few layout settings do what we need
LAYOUT = {
    "template": "none", "font": {"family": "system-ui, sans-serif", "size": 12}, "colorway": list(COLOURS),
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "hovermode": "closest", "paper_bgcolor": "white",
    "plot_bgcolor": "white",
}
AXIS = {"showgrid": True, "gridcolor": "#e5e5e5", "zeroline": False, "linecolor": "#999", "showline": True,
        "automargin": True}


def _go():
    import plotly.graph_objects as go

    return go


def styled(fig, title: str = "", height: int = 360, **layout):
    fig.update_layout(**{**LAYOUT, **layout}, title={"text": title, "font": {"size": 13}}, height=height)
    fig.update_xaxes(**AXIS)
    fig.update_yaxes(**AXIS)
    return fig


def embed(fig, div_id: str, css_class: str = "chart", attrs: str = "") -> str:
    """A div and the script that draws `fig` (a plotly Figure or a plotly.js figure dict) into it.
    The JSON is made safe inside <script> (labels come from records: '</script>' must not end it)."""
    text = json.dumps(fig) if isinstance(fig, dict) else fig.to_json()
    payload = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    height = fig["layout"].get("height") if isinstance(fig, dict) else fig.layout.height
    # the box keeps the figure's height: a resize then only changes the width
    style = f' style="height:{int(height)}px"' if height else ""
    return (f'<div id="{div_id}" class="{css_class}"{style} {attrs}></div>\n<script>(function(){{var f={payload};'
            f'Plotly.newPlot("{div_id}",f.data,f.layout,{{responsive:true,displaylogo:false}});}})();</script>')


def dot_plot(labels: Sequence[str], means: Sequence[float], lows: Sequence[float | None],
             highs: Sequence[float | None], reference: str, ref_mean: float, metric: str, title: str):
    """Each row's mean with the 95% paired-bootstrap CI of its difference to the reference,
    placed on the row's mean; the reference is the dashed line."""
    go = _go()
    fig = go.Figure()
    err_plus = [None if h is None else h - m for m, h in zip(means, highs)]
    err_minus = [None if lo is None else m - lo for m, lo in zip(means, lows)]
    fig.add_trace(go.Scatter(
        x=list(means), y=list(labels), mode="markers", marker={"size": 9, "color": COLOURS[0]}, name=metric,
        error_x={"type": "data", "array": err_plus, "arrayminus": err_minus, "thickness": 1.5, "width": 4},
        hovertemplate="%{y}: %{x:.4f}<extra></extra>",
    ))
    if not math.isnan(ref_mean):  # a reference without runs draws no line
        fig.add_vline(x=ref_mean, line={"dash": "dash", "color": COLOURS[3]},
                      annotation_text=f"reference: {reference}", annotation_font_size=10)
    styled(fig, title, height=max(220, 60 + 28 * len(labels)), showlegend=False)
    fig.update_xaxes(title_text=f"test {metric} (mean; 95% CI of the paired difference to the reference)")
    fig.update_yaxes(autorange="reversed")
    return fig


def pvalue_heatmap(labels: Sequence[str], matrix: np.ndarray, alpha: float, title: str):
    """Adjusted p-values between every pair of rows; cells under alpha are outlined in text."""
    go = _go()
    text = [["" if math.isnan(v) else (f"{v:.3f}" + (" *" if v < alpha else "")) for v in row] for row in matrix]
    z = [[None if math.isnan(v) else v for v in row] for row in matrix]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(labels), y=list(labels), text=text, texttemplate="%{text}", zmin=0, zmax=1,
        colorscale=[[0, "#08519c"], [alpha, "#6baed6"], [alpha + 1e-9, "#f0f0f0"], [1, "#ffffff"]],
        colorbar={"title": {"text": "adj. p"}}, hovertemplate="%{y} vs %{x}: p = %{z:.4f}<extra></extra>",
    ))
    n = len(labels)
    styled(fig, title, height=max(260, 120 + 32 * n))
    fig.update_xaxes(showgrid=False, tickangle=-30)
    fig.update_yaxes(showgrid=False, autorange="reversed")
    return fig


def cost_scatter(points: Sequence[dict], metric: str, x_key: str, x_title: str, title: str):
    """Cost (s/epoch or parameters) vs quality, one marker per row."""
    go = _go()
    fig = go.Figure()
    for i, p in enumerate(points):
        fig.add_trace(go.Scatter(
            x=[p[x_key]], y=[p["y"]], mode="markers+text", text=[p["label"]], textposition="top center",
            marker={"size": 10, "color": COLOURS[i % len(COLOURS)]}, name=p["label"],
            hovertemplate=f"{p['label']}<br>{x_title}: %{{x:,.3g}}<br>{metric}: %{{y:.4f}}<extra></extra>",
        ))
    styled(fig, title, showlegend=False)
    if x_key == "parameters":  # log axis, padded by half a decade for the labels
        xs = [p[x_key] for p in points if p[x_key] > 0]
        lo, hi = (math.log10(min(xs)) - 0.3, math.log10(max(xs)) + 0.3) if xs else (0, 1)
        fig.update_xaxes(title_text=x_title, type="log", range=[lo, hi])
    else:  # from 0, with room for the labels of the slowest rows
        fig.update_xaxes(title_text=x_title, range=[0, max(p[x_key] for p in points) * 1.25])
    top = max(p["y"] for p in points)
    fig.update_yaxes(title_text=f"test {metric}", range=[0, top * 1.2 if top > 0 else 1])  # quality from 0
    return fig


# Run pages are the many pages of a site: their two figures are written as plotly.js figure
# dicts (the JSON plotly.js reads) rather than graph objects, whose validation costs ~0.5 s a figure.


def _layout(title: str, height: int, **extra) -> dict:
    return {**LAYOUT, "title": {"text": title, "font": {"size": 13}}, "height": height, **extra}


def stage_curves(history: dict[str, list[dict]], stages: Sequence[str], best_epoch: int | None, final: str,
                 title: str) -> dict:
    """Training loss (top row) and validation metric (bottom row) per epoch, a column per stage."""
    n = len(stages)
    data, layout = [], _layout(title, 480, legend={"orientation": "h", "y": -0.15}, showlegend=True,
                               margin={"l": 60, "r": 20, "t": 70, "b": 50},
                               grid={"rows": 2, "columns": n, "pattern": "independent", "ygap": 0.1},
                               annotations=[], shapes=[])
    for col, stage in enumerate(stages):
        epochs = history[stage]
        metric = next((k for k in epochs[0] if "@" in k), None) if epochs else None
        xs = [e["epoch"] + 1 for e in epochs]  # 1-based, as the tables count
        top, bottom = col + 1, n + col + 1  # axis numbers: row 1 then row 2
        for row, (key, name, colour) in enumerate((("loss", "loss", COLOURS[0]),
                                                   (metric, f"validation {metric}", COLOURS[1]))):
            if key is None:
                continue
            axis = top if row == 0 else bottom
            data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": [e.get(key) for e in epochs],
                         "name": name, "legendgroup": name, "showlegend": col == 0,
                         "marker": {"size": 4, "color": colour}, "line": {"color": colour},
                         "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
            ticks = {"tick0": 1, "dtick": max(1, math.ceil(len(xs) / 10))}  # whole epochs
            layout[f"xaxis{axis}"] = ({**AXIS, **ticks, "title": {"text": "epoch"}} if row else
                                      {**AXIS, **ticks, "matches": f"x{bottom}", "showticklabels": False})
            layout[f"yaxis{axis}"] = {**AXIS, "title": {"text": "training loss" if row == 0 else f"valid {metric}"}}
            if stage == final and best_epoch is not None:
                layout["shapes"].append({"type": "line", "x0": best_epoch + 1, "x1": best_epoch + 1, "xref": f"x{axis}",
                                         "y0": 0, "y1": 1, "yref": f"y{axis} domain",
                                         "line": {"dash": "dot", "color": COLOURS[2]}})
        layout["annotations"].append({"text": stage, "showarrow": False, "xref": f"x{top} domain", "x": 0.5,
                                      "yref": f"y{top} domain", "y": 1.1, "font": {"size": 13}})
    return {"data": data, "layout": layout}


def histogram(values: np.ndarray, metric: str, title: str, bins: int = 20) -> dict:
    """Per-user values pre-binned here (a page carries counts, not every user's value). Users
    with 0 (target outside the cut-off) get their own bar: they are most users at small K."""
    values = np.asarray(values, dtype=np.float64)
    zero = int((values == 0).sum())
    counts, edges = np.histogram(values[values > 0], bins=bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    data = [
        {"type": "bar", "x": [0.0], "y": [zero], "width": [0.02], "name": "= 0", "marker": {"color": COLOURS[7]},
         "hovertemplate": "= 0: %{y} users<extra></extra>"},
        {"type": "bar", "x": centres.tolist(), "y": counts.tolist(), "width": [(edges[1] - edges[0]) * 0.9] * bins,
         "name": "> 0", "marker": {"color": COLOURS[0]}, "hovertemplate": "%{x:.3f}: %{y} users<extra></extra>"},
    ]
    layout = _layout(title, 300, bargap=0.05, legend={"orientation": "h", "y": 1.12},
                     xaxis={**AXIS, "title": {"text": f"per-user test {metric} ({len(values):,} users, "
                                                       f"{zero / max(len(values), 1):.0%} at 0)"}},
                     # log: the users at 0 would flatten every other bar
                     yaxis={**AXIS, "type": "log", "dtick": 1, "title": {"text": "users"}})
    return {"data": data, "layout": layout}


def grouped_bars(groups: Sequence[str], series: dict[str, Sequence[float]], metric: str, x_title: str, title: str):
    """One group per stratum, one bar per row (model)."""
    go = _go()
    fig = go.Figure([go.Bar(x=list(groups), y=list(ys), name=label) for label, ys in series.items()])
    styled(fig, title, barmode="group", legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=f"test {metric}")
    return fig


def optuna_figure(fig, title: str):
    """Optuna's own figures, restyled like the rest of the site (their own titles kept)."""
    title = title or (fig.layout.title.text or "")
    return styled(fig, title, height=380)


def dumps(obj) -> str:
    return json.dumps(obj).replace("<", "\\u003c")
