"""Two training runs on one plot: per-update train loss of run A against run B (e.g. eager against compiled with CUDA
graphs, same seed, same data), their largest relative loss difference, and each run's median img/s after warm-up.

    python benchmarks/overlay.py RUN_A RUN_B [--labels eager,cuda-graphs] [--skip 5] [--out overlay.png]

RUN_A / RUN_B are run directories with a metrics.jsonl (train records logged every update: trainer.log_every=1).
Prints a Markdown table; writes the PNG beside RUN_B unless --out says otherwise. Exit 1 when the runs share no update.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from mobilemamba.engine.runlog import read_metrics


def train_losses(run_dir: Path) -> dict[int, dict]:
    """iteration -> train record, for the updates that were not skipped."""
    return {r["iteration"]: r for r in read_metrics(run_dir)
            if r.get("kind") == "train" and "loss" in r and not r.get("skipped")}


def compare(a: dict[int, dict], b: dict[int, dict], skip: int = 5) -> dict:
    """Loss agreement over the shared updates; img/s medians over the updates after the first `skip` of each run."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise ValueError("the two runs share no logged update (log every update: trainer.log_every=1)")
    rel = [abs(a[i]["loss"] - b[i]["loss"]) / max(abs(a[i]["loss"]), 1e-12) for i in shared]

    def ips(run: dict[int, dict]) -> float:
        speeds = [r["img_per_s"] for i, r in sorted(run.items()) if i > skip and r.get("img_per_s")]
        return statistics.median(speeds) if speeds else float("nan")

    worst = max(range(len(shared)), key=rel.__getitem__)
    return {"updates": len(shared), "max_rel": rel[worst], "at": shared[worst], "mean_rel": sum(rel) / len(rel),
            "first_loss": (a[shared[0]]["loss"], b[shared[0]]["loss"]),
            "last_loss": (a[shared[-1]]["loss"], b[shared[-1]]["loss"]), "img_per_s": (ips(a), ips(b))}


def table(c: dict, labels: tuple[str, str]) -> str:
    (a, b), (ia, ib) = labels, c["img_per_s"]
    return "\n".join([
        f"| | {a} | {b} |", "|---|---:|---:|",
        f"| loss at the first shared update | {c['first_loss'][0]:.5f} | {c['first_loss'][1]:.5f} |",
        f"| loss at the last shared update | {c['last_loss'][0]:.5f} | {c['last_loss'][1]:.5f} |",
        f"| median img/s after warm-up | {ia:,.0f} | {ib:,.0f} ({ib / ia:.2f}x) |",
        "",
        f"{c['updates']} shared updates: loss differs by {c['mean_rel']:.2e} relative on average, at most "
        f"{c['max_rel']:.2e} (update {c['at']}).",
    ])


def plot(a: dict[int, dict], b: dict[int, dict], labels: tuple[str, str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, label, style in ((a, labels[0], "-"), (b, labels[1], "--")):
        its = sorted(run)
        ax.plot(its, [run[i]["loss"] for i in its], style, label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("train loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    ap.add_argument("--labels", default="A,B", help="two names, comma-separated")
    ap.add_argument("--skip", type=int, default=5, help="warm-up updates left out of the img/s medians")
    ap.add_argument("--out", type=Path, default=None, help="PNG path (default RUN_B/overlay.png)")
    args = ap.parse_args(argv)
    labels = tuple(args.labels.split(",", 1)) if "," in args.labels else ("A", "B")
    a, b = train_losses(args.run_a), train_losses(args.run_b)
    try:
        c = compare(a, b, args.skip)
    except ValueError as err:
        print(f"overlay: {err}", file=sys.stderr)
        return 1
    print(table(c, labels))
    print(f"plot: {plot(a, b, labels, args.out or args.run_b / 'overlay.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
