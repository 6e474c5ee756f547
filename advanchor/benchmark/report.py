"""The benchmark's outputs: results.csv, summary.md, the plots and report.html (self-contained)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

from ..export import write_atomic
from .cells import Cell
from .metrics import ATTACKED, BEST_HIGH, COLUMNS, SUMMARY, original_row, summarize
from .runner import sample_prompts

MISSING = "–"  # a figure a cell does not have (no paraphrase for a texture, no attack): never an empty cell
HEADERS = {
    "ua": "UA",
    "ira": "IRA",
    "cra": "CRA",
    "ira_ratio": "IRA / original",
    "cra_ratio": "CRA / original",
    "hmean": "harmonic mean",
    "worst_ua": "worst UA",
    "worst_ira_ratio": "worst IRA / original",
    "worst_cra_ratio": "worst CRA / original",
    "paraphrase_ua": "paraphrase UA",
}


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _csv_value(value):
    if value is None:
        return ""
    return round(value, 4) if isinstance(value, float) else value


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: _csv_value(r.get(k)) for k in COLUMNS} for r in rows])
    write_atomic(path, buffer.getvalue())


def summary_rows(rows: list[dict], originals: dict[str, dict]) -> tuple[list[dict], dict]:
    """(one row per method, the original model's row on the same concepts)."""
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    return summarize(rows), original_row(originals, concepts)


def best(summary: list[dict]) -> dict[str, float]:
    return {k: max(r[k] for r in summary) for k in BEST_HIGH}


def summary_markdown(summary: list[dict], original: dict) -> str:
    """One row per method, the best figure of each column in bold, the original model last for reference."""
    top = best(summary)
    lines = [
        "| " + " | ".join(HEADERS.get(k, k) for k in SUMMARY) + " |",
        "|" + "---|" * len(SUMMARY),
    ]
    for row in summary:
        cells = [f"**{fmt(row[k])}**" if k in top and row[k] == top[k] else fmt(row[k]) for k in SUMMARY]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| " + " | ".join(f"*{fmt(original[k])}*" if k != "method" else "*original*" for k in SUMMARY) + " |")
    return "\n".join(lines) + "\n"


def results_markdown(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """Every cell as a markdown table, for README and notes."""
    lines = ["| " + " | ".join(HEADERS.get(k, k) for k in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _figure_png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _figure(figsize: tuple[float, float]):
    """A figure drawn for a file only, without pyplot: it needs no display (a cluster node, CI) and leaves the
    caller's backend alone (a notebook's inline plots stay on)."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def scatter_png(rows: list[dict]) -> bytes:
    """UA against retained accuracy, one point per cell, one colour per method."""
    fig = _figure((6.4, 4.8))
    ax = fig.subplots()
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [r for r in rows if r["method"] == method]
        ax.scatter([r["retained"] for r in cells], [r["ua"] for r in cells], label=method, alpha=0.8)
    ax.set_xlabel("retained accuracy (every prompt not naming the concept)")
    ax.set_ylabel("UA (erased prompts' images without the concept)")
    # Retained accuracy spans a few hundredths between methods: zoom to the cells, UA keeps its full range.
    ax.set_xlim(max(0.0, min(r["retained"] for r in rows) - 0.03), 1.005)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower left")
    ax.set_title("one point per (method, concept, training seed); top right is best")
    return _figure_png(fig)


def heatmap_png(rows: list[dict]) -> bytes:
    """UA per method (rows) and concept (columns), averaged over training seeds."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    grid = [[math.nan] * len(concepts) for _ in methods]
    for i, m in enumerate(methods):
        for j, c in enumerate(concepts):
            values = [r["ua"] for r in rows if r["method"] == m and r["concept"] == c]
            if values:
                grid[i][j] = sum(values) / len(values)
    fig = _figure((1.0 + 0.7 * len(concepts), 1.0 + 0.45 * len(methods)))
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(concepts)), concepts, rotation=45, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            ax.text(j, i, fmt(value), ha="center", va="center", fontsize=7, color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="UA")
    ax.set_title("UA per method and concept")
    return _figure_png(fig)


def _img(png: bytes, alt: str, scale: int = 1) -> str:
    data = base64.b64encode(png).decode()
    style = f' style="width:{scale * 100}%;image-rendering:pixelated"' if scale > 1 else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"{style}>'


def _table(
    rows: list[dict], columns: tuple[str, ...], bold: dict[str, float] | None = None, reference: tuple[dict, ...] = ()
) -> str:
    """An HTML table; `bold` figures are the best of `rows`, `reference` rows follow without bold."""
    head = "".join(f"<th>{html.escape(HEADERS.get(k, k))}</th>" for k in columns)
    body = []
    for r in [*rows, *reference]:
        cells = []
        for k in columns:
            text = html.escape(fmt(r.get(k)))
            if bold and k in bold and r.get(k) == bold[k] and r not in reference:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def report_html(
    out: Path, rows: list[dict], summary: list[dict], original: dict, plots: dict[str, bytes], title: str
) -> str:
    """One page, every image inline: the summary, the plots, every cell, and per concept the original's
    and each method's images at the same prompts and seeds."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}",
        ".grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0;width:130px}",
        "figcaption{font-size:12px;text-align:center}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Summary</h2>",
        _table(summary, SUMMARY, best(summary), reference=({**original, "method": "original"},)),
        "<h2>Plots</h2>",
        *(_img(png, name) for name, png in plots.items()),
        "<h2>Every cell</h2>",
        _table(rows, COLUMNS),
    ]
    concepts = list(dict.fromkeys(r["concept"] for r in rows))
    for concept in concepts:
        prompts = "; ".join(f"{i + 1}. {p}" for i, p in enumerate(sample_prompts(concept)))
        parts.append(f"<h2>{html.escape(concept)}</h2><p>rows: {html.escape(prompts)}; columns: seeds</p>")
        figures = [("original", out / "original" / f"{concept}.png")]
        figures += [
            (f"{r['method']} (seed {r['train_seed']})", Cell(r["method"], concept, r["train_seed"]).folder(out))
            for r in rows
            if r["concept"] == concept
        ]
        parts.append("<div class='grid'>")
        for label, path in figures:
            png = (path / "samples.png" if path.is_dir() else path).read_bytes()
            parts.append(f"<figure>{_img(png, label)}<figcaption>{html.escape(label)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out: Path, rows: list[dict], originals: dict[str, dict], title: str) -> dict[str, Path]:
    """results.csv (and as a table, results.md), summary.md, scatter.png, heatmap.png and report.html in `out`;
    attacks.md, each cell's UA and ASRs, when attacks ran."""
    summary, original = summary_rows(rows, originals)
    plots = {"scatter.png": scatter_png(rows), "heatmap.png": heatmap_png(rows)}
    files = {name: write_atomic(out / name, png) for name, png in plots.items()}
    write_csv(rows, out / "results.csv")
    files["results.csv"] = out / "results.csv"
    files["summary.md"] = write_atomic(out / "summary.md", summary_markdown(summary, original))
    files["results.md"] = write_atomic(out / "results.md", results_markdown(rows))
    attacked = [k for k in ATTACKED if any(r.get(k) is not None for r in rows)]
    if attacked:
        columns = ("method", "concept", "train_seed", "ua", "pre_asr", *attacked, "attack_s")
        files["attacks.md"] = write_atomic(out / "attacks.md", results_markdown(rows, columns))
    page = report_html(out, rows, summary, original, plots, title)
    files["report.html"] = write_atomic(out / "report.html", page)
    return files
