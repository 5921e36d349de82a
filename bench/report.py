"""Result rows, the printed table and the JSON file."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def percentiles(values: Sequence[float]) -> dict:
    """p50/p90/p99/max (nearest rank) and the count; empty dict for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return round(ordered[min(n - 1, max(0, int(q * n + 0.5) - 1))], 1)

    return {"n": n, "p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": round(ordered[-1], 1)}


@dataclass
class Row:
    scenario: str
    description: str
    server: str
    target: str = "chorus"  # or the peer measured (bench/peers), e.g. "bare-hub"
    subscribers: int = 0
    connected: int = 0
    received: int = 0
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    deliveries_per_s: float | None = None
    latency: dict = field(default_factory=dict)  # ms
    cpu_ms_per_1k: float | None = None
    kb_per_stream: float | None = None
    key_time: str = ""
    notes: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # working values, not reported
    error: str = ""

    def as_json(self) -> dict:
        out = asdict(self)
        out.pop("extra")
        return out


_COLUMNS = [
    ("scenario", 15),
    ("subs", 11),
    ("delivered/expected", 19),
    ("lost", 5),
    ("dup", 4),
    ("ooo", 4),
    ("deliv/s", 8),
    ("p50", 7),
    ("p90", 7),
    ("p99", 7),
    ("max", 7),
    ("cpu/1k", 7),
    ("KB/strm", 7),
    ("", 0),
]


def _fmt(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if digits else f"{value:.0f}"
    return str(value)


def _cells(row: Row, label: str) -> list[str]:
    lat = row.latency or {}
    ok = row.lost == 0 and row.duplicated == 0 and row.out_of_order == 0
    extra = []
    if row.key_time:
        extra.append(row.key_time)
    for key in (
        "delivery_only_cpu_ms_per_1k",
        "publish_cpu_ms_per_event_alone",
        "server_cpu_ms_per_event",
        "idle_server_cpu_ms_per_s",
        "event_rate_per_s",
        "reconnects",
        "connect_failed",
        "subs_silent",
        "not_caught_up_after_drop",
    ):
        if key in row.notes:
            extra.append(f"{key}={row.notes[key]}")
    publish = row.notes.get("publish") or {}
    if publish.get("errors"):
        extra.append(f"publish_errors={publish['errors']}/{publish['requested']}")
    if publish and publish.get("requested") and publish.get("achieved_rate") is not None:
        extra.append(f"published {publish['achieved_rate']}/s")
    if row.notes.get("server_log_errors"):
        extra.append(f"server_errors={sum(row.notes['server_log_errors'].values())}")
    if row.error:
        extra.append(f"ERROR {row.error[:120]}")
    delivered = f"{row.received}/{row.expected}" if row.expected else "-"
    return [
        label,
        f"{row.connected}/{row.subscribers}",
        delivered + ("" if ok or not row.expected else " !"),
        _fmt(row.lost if row.expected else None),
        _fmt(row.duplicated if row.expected else None),
        _fmt(row.out_of_order if row.expected else None),
        _fmt(row.deliveries_per_s, 0),
        _fmt(lat.get("p50")),
        _fmt(lat.get("p90")),
        _fmt(lat.get("p99")),
        _fmt(lat.get("max")),
        _fmt(row.cpu_ms_per_1k),
        _fmt(row.kb_per_stream),
        "; ".join(extra),
    ]


def _labels(rows: Sequence[Row]) -> list[str]:
    """The scenario column: a peer's row right under Chorus's of the same scenario is named
    by the peer alone, indented; elsewhere as `scenario @peer`."""
    labels = []
    for i, row in enumerate(rows):
        above = rows[i - 1] if i else None
        if row.target == "chorus":
            labels.append(row.scenario)
        elif above is not None and above.scenario == row.scenario and above.target == "chorus":
            labels.append(f"  {row.target}")
        else:
            labels.append(f"{row.scenario} @{row.target}")
    return labels


def table(rows: Sequence[Row]) -> str:
    labels = _labels(rows)
    columns = [(_COLUMNS[0][0], max([_COLUMNS[0][1], *map(len, labels)])), *_COLUMNS[1:]]
    lines = ["  ".join(name.ljust(width) if width else name for name, width in columns)]
    lines.append("  ".join("-" * width if width else "-----" for _, width in columns))
    for row, label in zip(rows, labels, strict=True):
        cells = _cells(row, label)
        lines.append("  ".join(c.ljust(w) if w else c for c, (_, w) in zip(cells, columns, strict=True)))
    lines.append(
        "latency p50..max: publish-to-receive in ms; cpu/1k: server CPU ms (utime+stime of the server "
        "processes, REST publishing included) per 1,000 deliveries; KB/strm: server RSS growth per open stream"
    )
    return "\n".join(lines)


# Issue 12's targets: Chorus / bare hub at most this, measured on the same machine.
TARGETS = {("fanout-1000", "cpu/1k"): 1.1, ("fanout-100", "p50"): 1.5}


def _metrics(row: Row) -> dict[str, float | None]:
    """What is compared between Chorus and a peer, by scenario kind (read from the notes)."""
    notes = row.notes
    out: dict[str, float | None] = {}
    if row.expected:
        out["cpu/1k"] = row.cpu_ms_per_1k
        out["p50"] = (row.latency or {}).get("p50")
    if "delivery_only_cpu_ms_per_1k" in notes:
        out["delivery cpu/1k"] = notes["delivery_only_cpu_ms_per_1k"]
    if "server_cpu_ms_per_event" in notes:
        out["cpu/event"] = notes["server_cpu_ms_per_event"]
    if row.scenario.startswith("writers"):
        out["posts/s"] = (notes.get("publish") or {}).get("achieved_rate")
        out["POST p50"] = (notes.get("publish") or {}).get("post_ms_p50")
    if "idle_server_cpu_ms_per_s" in notes:
        out["idle cpu ms/s"] = notes["idle_server_cpu_ms_per_s"]
        out["KB/strm"] = row.kb_per_stream
    return out


def compare(rows: Sequence[Row]) -> list[tuple[str, str, dict]]:
    """For each scenario run on Chorus and on a peer: (scenario, peer, {metric: figures}),
    each figure {"chorus", "peer", "ratio" (Chorus / peer), and "target", "met" where
    issue 12 sets one}. Rows with an error are not compared."""
    chorus = {r.scenario: r for r in rows if r.target == "chorus" and not r.error}
    out = []
    for peer in rows:
        mine = chorus.get(peer.scenario)
        if peer.target == "chorus" or peer.error or mine is None:
            continue
        figures = {}
        theirs = _metrics(peer)
        for name, value in _metrics(mine).items():
            other = theirs.get(name)
            if value is None or other is None:
                continue
            figure = {"chorus": value, "peer": other, "ratio": round(value / other, 2) if other else None}
            target = TARGETS.get((peer.scenario, name))
            if target is not None and figure["ratio"] is not None:
                figure.update(target=target, met=figure["ratio"] <= target)
            figures[name] = figure
        out.append((peer.scenario, peer.target, figures))
    return out


def _figure(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def comparison_text(rows: Sequence[Row]) -> str:
    """The ratios under the table: Chorus / peer per metric, issue 12's targets marked."""
    compared = compare(rows)
    if not compared:
        return ""
    lines = [
        f"Chorus / {', '.join(sorted({peer for _, peer, _ in compared}))}: each figure is Chorus's over the "
        "peer's (above 1 Chorus costs more; for posts/s, above 1 Chorus is faster)"
    ]
    for scenario, _, figures in compared:
        cells = []
        for name, f in figures.items():
            ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
            cell = f"{name} {_figure(f['chorus'])} / {_figure(f['peer'])} = {ratio}"
            if "target" in f:
                cell += f" (target <= {f['target']:g}x: {'met' if f['met'] else 'MISSED'})"
            cells.append(cell)
        lines.append(f"  {scenario:15} {'; '.join(cells)}")
    return "\n".join(lines)


def write_json(rows: Sequence[Row], meta: dict) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    peer = f"-vs-{meta['peer']}" if meta.get("peer") else ""
    path = RESULTS_DIR / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{meta.get('server', 'run')}{peer}.json"
    comparisons = [{"scenario": s, "peer": p, "figures": f} for s, p, f in compare(rows)]
    body = {"meta": meta, "results": [r.as_json() for r in rows]}
    if comparisons:
        body["comparisons"] = comparisons
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path
