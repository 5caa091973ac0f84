"""How registered versions compare: a table, a plot with the champion periods, the history.

MLflow's registry shows one version at a time; this puts every version of a model side by side:

    y9k registry compare yolo9000-demo --metric map50_unseen --metric map50_all
    y9k registry history yolo9000-demo

The table has each version's metrics (its ``metric.<name>`` tags), data fingerprint (tag
``data.ingest.fingerprint``), tree hash, aliases and the periods it was champion; the plot draws
the metrics across versions (x: when each version was registered) with each champion period
shaded. The register stage logs both (``registry/versions.png``, ``registry/versions.txt``) into
the run of the version it registered, so the MLflow UI shows them beside that version's model.
Champion periods come from the moves recorded by pipelines/registry.py (``champion_move.NNNN``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipelines import registry

DEFAULT_METRICS = ("map50_all", "map50_seen", "map50_unseen")
PLOT_FILE, TABLE_FILE = "registry/versions.png", "registry/versions.txt"


@dataclass
class Period:
    """``version`` was champion from ``start`` to ``end`` (ms since the epoch; None: still is)."""

    version: str
    start: int
    end: int | None
    reason: str


def champion_periods(moves: Sequence[dict[str, Any]]) -> list[Period]:
    periods = []
    for k, m in enumerate(moves):
        end = moves[k + 1]["at"] if k + 1 < len(moves) else None
        periods.append(Period(str(m["version"]), int(m["at"]), end, m.get("reason", "")))
    return periods


def _when(ms: int | None) -> str:
    return "now" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def compare(name: str, tracking_uri: str | None = None, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, Any]:
    """Every version of ``name`` (oldest first) with its metrics, provenance and champion periods."""
    client = registry._client(tracking_uri)
    versions = registry.list_versions(name, tracking_uri)
    periods = champion_periods(registry.champion_moves(name, client=client))
    rows = []
    for v in sorted(versions, key=lambda r: int(r["version"])):
        tags = client.get_model_version(name, v["version"]).tags
        rows.append({
            "version": str(v["version"]), "created": int(v["created"]), "aliases": v["aliases"],
            "metrics": {m: _float(tags.get(registry.METRIC_PREFIX + m)) for m in metrics},
            "data_fingerprint": tags.get("data.ingest.fingerprint", ""), "tree_hash": tags.get("tree_hash", ""),
            "champion": [p for p in periods if p.version == str(v["version"])],
        })
    return {"name": name, "metrics": list(metrics), "rows": rows, "periods": periods}


def _float(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def table(cmp: dict[str, Any]) -> str:
    """The comparison as fixed-width text (the CLI prints it; the register stage logs it)."""
    metrics = cmp["metrics"]
    head = ["version", "registered (UTC)", *metrics, "data fingerprint", "tree hash", "aliases", "champion"]
    body = []
    for r in cmp["rows"]:
        vals = ["-" if r["metrics"][m] is None else f"{r['metrics'][m]:.4f}" for m in metrics]
        champ = "; ".join(f"{_when(p.start)} -> {_when(p.end)}" for p in r["champion"]) or "-"
        # The tree hash is a sha256: its first 16 hex digits tell trees apart, as the fingerprints' do.
        body.append([r["version"], _when(r["created"]), *vals, r["data_fingerprint"] or "-", r["tree_hash"][:16] or "-",
                     ",".join(r["aliases"]) or "-", champ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body])


def plot(cmp: dict[str, Any]) -> Any:
    """Metrics across versions (x: registration time), each champion period shaded and labelled."""
    from datetime import UTC, datetime

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    def dt(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, UTC)

    rows = cmp["rows"]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    xs = [dt(r["created"]) for r in rows]
    for m in cmp["metrics"]:
        pts = [(x, r["metrics"][m]) for x, r in zip(xs, rows) if r["metrics"][m] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    now = max([time.time() * 1000] + [r["created"] for r in rows])
    colors = ["#f6c85f", "#9dd9d2", "#c5b0d5", "#ffb482", "#8de5a1"]  # one per version: a comeback looks the same
    for p in cmp["periods"]:
        end = p.end if p.end is not None else now
        ax.axvspan(dt(p.start), dt(end), color=colors[int(p.version) % len(colors)], alpha=0.45, lw=0)
        ax.text(dt(p.start), 1.0, f" champion v{p.version}", transform=ax.get_xaxis_transform(), va="top",
                fontsize=8)
    for x, r in zip(xs, rows):
        ax.annotate(f"v{r['version']}", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("registered (UTC); shaded: champion periods")
    ax.set_ylabel("metric")
    ax.set_title(f"{cmp['name']}: {len(rows)} versions")
    ax.grid(alpha=0.3)
    if cmp["metrics"]:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def png_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def history(name: str, tracking_uri: str | None = None) -> str:
    """The champion moves as text, oldest first: when, to which version, from which, who, why."""
    moves = registry.champion_moves(name, tracking_uri)
    if not moves:
        return f"{name}: no champion moves recorded"
    lines = []
    for m in moves:
        prev = f"from version {m['from']}" if m.get("from") else "first champion"
        lines.append(f"{_when(m['at'])}  version {m['version']} ({prev})  by {m.get('by', '?')} via "
                     f"{m.get('trigger', '?')}: {m.get('reason', '')}")
    return "\n".join(lines)


def log_comparison(name: str, run_id: str, tracking_uri: str | None = None,
                   metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, Any]:
    """Log the table and the plot into ``run_id`` (the latest version's run). Returns the comparison."""
    cmp = compare(name, tracking_uri, metrics)
    client = registry._client(tracking_uri)
    client.log_text(run_id, table(cmp) + "\n\nchampion moves:\n" + history(name, tracking_uri) + "\n", TABLE_FILE)
    fig = plot(cmp)
    client.log_figure(run_id, fig, PLOT_FILE)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return cmp
