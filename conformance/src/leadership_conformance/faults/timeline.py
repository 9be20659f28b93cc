"""A campaign's timeline as a PNG: one lane per agent, leadership bars (one colour per key),
fault windows shaded (on the agent's lane, or across every lane for store faults), violations
marked in red."""

from __future__ import annotations

from .checker import History, Report

__all__ = ["draw"]

_FAULT_COLOURS = {
    "kill_leader": "#d62728",
    "kill_waiter": "#ff9896",
    "stop_leader": "#9467bd",
    "partition": "#7f7f7f",
    "cut": "#bcbd22",
    "reset": "#17becf",
    "latency": "#c5b0d5",
    "store_pause": "#8c564b",
    "store_restart": "#e377c2",
    "resign_storm": "#98df8a",
    "member_kill": "#ff7f0e",
}


def draw(history: History, report: Report, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    starts = [r for r in history.records if r.get("event") == "start"]
    t0 = starts[0]["t"] if starts else min((e["t"] for e in history.events), default=0.0)
    agents = sorted({e["agent"] for e in history.events}, key=lambda a: (a.startswith("f"), a))
    lane = {a: i for i, a in enumerate(agents)}
    keys = sorted({iv.key for iv in report.intervals} | {e["key"] for e in history.events})
    key_colour = {k: c for k, c in zip(keys, ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd"] * 4, strict=False)}
    fig, ax = plt.subplots(figsize=(14, 1.0 + 0.55 * max(1, len(agents))))
    for r in history.records:
        if r.get("event") != "fault":
            continue
        colour = _FAULT_COLOURS.get(r["kind"], "#cccccc")
        width = max(r["end"] - r["start"], 0.15)
        if r.get("target") in lane:
            ax.broken_barh([(r["start"] - t0, width)], (lane[r["target"]] - 0.45, 0.9), color=colour, alpha=0.35)
        else:
            ax.axvspan(r["start"] - t0, r["start"] - t0 + width, color=colour, alpha=0.2)
    for iv in report.intervals:
        ax.broken_barh([(iv.start - t0, iv.end - iv.start)], (lane[iv.agent] - 0.2, 0.4), color=key_colour[iv.key])
    for e in history.events:
        if e["event"] == "leader" and e["agent"] in lane:
            ax.plot(e["t"] - t0, lane[e["agent"]], "|", color=key_colour.get(e["key"], "k"), markersize=10)
    for v in report.violations:
        y = next((lane[a] for a in agents if a in v.detail.split(":")[0].split()), len(agents) - 0.5)
        ax.plot(v.t - t0 if v.t else 0, y, "x", color="red", markersize=12, markeredgewidth=2)
    ax.set_yticks(range(len(agents)), agents)
    ax.set_ylim(-0.6, len(agents) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the campaign started")
    ax.set_title(title)
    handles = [Patch(color=key_colour[k], label=f"leads {k.rsplit('/', 1)[-1]}") for k in keys]
    kinds = sorted({r["kind"] for r in history.records if r.get("event") == "fault"})
    handles += [Patch(color=_FAULT_COLOURS.get(k, "#ccc"), alpha=0.4, label=k) for k in kinds]
    if report.violations:
        handles.append(Patch(color="red", label=f"{len(report.violations)} violation(s)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
