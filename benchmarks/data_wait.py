"""Data wait as a share of the training step, from a run's metrics.jsonl (train records carry both times).

    python benchmarks/data_wait.py RUN_DIR/metrics.jsonl [--skip 2]

The first ``--skip`` records (compilation, CUDA-graph capture, pipeline build) are left out.
"""
from __future__ import annotations

import argparse
import json
import statistics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("--skip", type=int, default=2)
    args = ap.parse_args()
    try:
        with open(args.metrics) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{args.metrics}: cannot read the run's records ({e})") from None
    train = [r for r in recs if r.get("kind") == "train" and "data_time" in r and "step_time" in r]
    late = train[args.skip:]
    if not late:
        raise SystemExit(f"{args.metrics}: fewer than {args.skip + 1} train records")
    data, step = [r["data_time"] for r in late], [r["step_time"] for r in late]
    print("step ms / data ms per record:", " ".join(f"{1e3 * s:.1f}/{1e3 * d:.2f}" for s, d in zip(step, data)))
    print(f"{len(late)} records after the first {args.skip}: data wait median "
          f"{1e3 * statistics.median(data):.2f} ms of a median {1e3 * statistics.median(step):.1f} ms step; "
          f"{100 * sum(data) / sum(step):.1f}% of all step time")


if __name__ == "__main__":
    main()
