"""The plot of a `grserve bench overload` run: goodput against offered load for both variants with the
capacity line; the P99 of the 200s and of the 429s against offered load; and, after a soak, the server's
resident memory over time beside its goodput per minute."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NAN = float("nan")


def _variants(run: dict) -> list[str]:
    return list(run["levels"][0]["variants"]) if run["levels"] else []


def _goodput(ax, run: dict) -> None:
    offered = [r["offered_rate"] for r in run["levels"]]
    for name in _variants(run):
        ax.plot(offered, [r["variants"][name]["goodput"] for r in run["levels"]], marker="o", label=name)
    capacity = run["capacity"]["qps_at_slo"]
    ax.axhline(capacity, color="gray", linestyle="--", label=f"capacity at the SLO {capacity:.1f}/s")
    ax.set(xlabel="offered load (requests/s)", ylabel="goodput (200s within the deadline per s)",
           title="goodput under overload")
    ax.legend(fontsize=8)


def _latency(ax, run: dict) -> None:
    offered = [r["offered_rate"] for r in run["levels"]]
    for name, color in zip(_variants(run), ("tab:blue", "tab:orange")):
        for key, style, what in (("p99_200_ms", "-", "200s"), ("p99_429_ms", ":", "429s")):
            values = [r["variants"][name][key] for r in run["levels"]]
            ax.plot(offered, [NAN if v is None else v for v in values], style, marker="o", color=color,
                    label=f"{name}: P99 of {what}")
    ax.axhline(run["options"]["slo_ms"], color="red", linestyle="--", label="SLO")
    ax.set(xlabel="offered load (requests/s)", ylabel="latency (ms)", yscale="log", title="P99 of the 200s and of the 429s")
    ax.legend(fontsize=7)


def _soak(ax, soak: dict) -> None:
    t = [s / 60 for s, _ in soak["rss_kib"]]
    ax.plot(t, [kib / 1024 for _, kib in soak["rss_kib"]], color="tab:purple", label="resident memory")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set(xlabel="minutes", ylabel="VmRSS (MiB)", title=f"soak at {soak['offered_rate']:.1f}/s, admission on")
    twin = ax.twinx()
    per_minute = soak["goodput_per_minute"]
    twin.plot([m + 0.5 for m in range(len(per_minute))], per_minute, marker="s", color="tab:green",
              label="goodput per minute")
    twin.set_ylabel("goodput (per s)")
    ax.legend(loc="lower left", fontsize=8)
    twin.legend(loc="lower right", fontsize=8)


def plot_overload(run: dict, path: Path) -> None:
    panels = 3 if run.get("soak") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5))
    _goodput(axes[0], run)
    _latency(axes[1], run)
    if run.get("soak"):
        _soak(axes[2], run["soak"])
    fig.suptitle(f"grserve bench overload — {run['workload']}, SLO {run['options']['slo_ms']:.0f} ms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
