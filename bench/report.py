"""Bench results as JSON, a markdown table and (with matplotlib) a PNG of the ratios."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .workloads import Result


def write_reports(outdir: Path, meta: dict[str, object], results: list[Result]) -> dict[str, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths: dict[str, Path] = {}
    data = {"meta": meta, "results": [r.to_json() for r in results]}
    paths["json"] = outdir / f"bench-{stamp}.json"
    paths["json"].write_text(json.dumps(data, indent=1) + "\n")
    lines = [f"# Benchmarks ({meta['when']}, {meta['cpus']} CPUs, median of {meta['repeat']})", "",
             f"Our kernel's modules: {meta.get('kernel', 'Python')}.", "",
             "| workload | fs | contender | time (s) | vs host kernel | our peak RSS (MB) | note |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    for r in results:
        for row in r.rows:
            t = f"{row.seconds:.2f}" if row.seconds is not None else "n/a"
            x = r.ratio(row)
            ratio = "1.00" if row.reference and row.seconds else f"{x:.2f}" if x is not None else ""
            rss = f"{row.rss_mb:.0f}" if row.rss_mb is not None else ""
            lines.append(f"| {r.name} | {r.fs or ''} | {row.who} | {t} | {ratio} | {rss} | {row.note} |")
    datasets = meta.get("datasets")
    notes = datasets.get("notes") if isinstance(datasets, dict) else None
    if notes:
        lines += ["", "Notes: " + "; ".join(notes)]
    paths["markdown"] = outdir / f"bench-{stamp}.md"
    paths["markdown"].write_text("\n".join(lines) + "\n")
    (outdir / "latest.md").write_text("\n".join(lines) + "\n")
    png = _plot(outdir / f"bench-{stamp}.png", results)
    if png is not None:
        paths["png"] = png
    return paths


def _plot(path: Path, results: list[Result]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, ratios = [], []
    for r in results:
        for row in r.rows:
            x = r.ratio(row)
            if x is None:
                continue
            labels.append(f"{r.name.split(':')[0]} {r.fs or ''}\n{row.who}")
            ratios.append(x)
    if not ratios:
        return None
    fig, ax = plt.subplots(figsize=(max(6, len(ratios) * 0.9), 5))
    ax.bar(range(len(ratios)), ratios, color=["tab:blue" if "ours" in lb else "tab:gray"
                                               for lb in labels])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(ratios)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("time / host kernel's time")
    ax.set_title("Ratios against the host kernel (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
