"""Benchmark the classifier runtime: load time, batch-1 latency, batched throughput.

    .venv/bin/python bench/bench_classifier.py [--repeats 300] [--fp32 PATH] [--against DIR]

Prints the load time; p50/p95/p99 latency at batch 1 with 1 thread for 32/64/128-token
inputs; throughput on 2 threads for the bundled sample's real length mix, batched against
the same model unbatched in the same run; and int8 against fp32 when the fp32 file exists
(``llm-router classifier export`` leaves it in ``.cache/classifier/onnx/fp32``).
``--against DIR`` also times a second model (a candidate beside the shipped one) at batch 1,
its requests interleaved with the first model's, so a shared machine's noise falls on both.
Targets (issue): p99 <= 15 ms for one request of <= 128 tokens on 1 thread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from classifier_onnx import Scorer, default_model_dir, render_request

REPO = Path(__file__).resolve().parents[1]
FP32 = REPO / ".cache" / "classifier" / "onnx" / "fp32" / "model.onnx"


def sample_texts(model_dir: Path) -> list[str]:
    rows = [json.loads(x) for x in (model_dir / "sample_prompts.jsonl").read_text().splitlines()
            if x.strip()]
    return [render_request(r["messages"], tools=len(r.get("tools") or []),
                           turn=int(r.get("turn", 1))) for r in rows]


def percentiles(ms: list[float]) -> str:
    a = np.array(ms)
    return " ".join(f"p{q}={np.percentile(a, q):6.2f}" for q in (50, 95, 99)) + " ms"


def latency(scorer: Scorer, texts: list[str], repeats: int) -> list[float]:
    for t in texts[:10]:
        scorer.score([t])  # warm-up
    out = []
    for i in range(repeats):
        t = texts[i % len(texts)]
        start = time.perf_counter()
        scorer.score([t])
        out.append((time.perf_counter() - start) * 1000)
    return out


def latency_pair(
    first: Scorer, second: Scorer, texts: list[str], repeats: int
) -> tuple[list[float], list[float]]:
    """Batch-1 latency of two models, one request each in turn on the same text."""
    for t in texts[:10]:
        first.score([t])
        second.score([t])
    out: tuple[list[float], list[float]] = ([], [])
    pairs = ((first, out[0]), (second, out[1]))
    for i in range(repeats):
        t = texts[i % len(texts)]
        for scorer, times in pairs if i % 2 else pairs[::-1]:  # each goes first half the time
            start = time.perf_counter()
            scorer.score([t])
            times.append((time.perf_counter() - start) * 1000)
    return out


def throughput(scorer: Scorer, texts: list[str], batched: bool) -> float:
    start = time.perf_counter()
    if batched:
        scorer.score(texts)
    else:
        for t in texts:
            scorer.score([t])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=default_model_dir())
    parser.add_argument("--fp32", type=Path, default=FP32)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--against", type=Path, default=None,
                        help="A second model folder, timed interleaved with the first.")
    args = parser.parse_args()
    model_dir: Path = args.model_dir

    print(f"machine: {os.cpu_count()} cores; model {model_dir / 'model.onnx'} "
          f"({(model_dir / 'model.onnx').stat().st_size / 2**20:.1f} MiB)")
    loads = []
    for _ in range(3):
        start = time.perf_counter()
        Scorer.load(model_dir)
        loads.append((time.perf_counter() - start) * 1000)
    print(f"load: min {min(loads):.0f} ms, max {max(loads):.0f} ms (3 loads)")

    texts = sample_texts(model_dir)
    long_texts = [t for t in texts if len(t) > 700] or texts
    print("\nbatch 1, 1 thread (inputs truncated to exactly N tokens):")
    for n in (32, 64, 128):
        scorer = Scorer.load(model_dir, threads=1, max_tokens=n)
        tokens = [s.tokens for s in scorer.score(long_texts[:50])]
        ms = latency(scorer, long_texts, args.repeats)
        print(f"  {n:3d} tokens (mean {np.mean(tokens):5.1f}): {percentiles(ms)}")

    print(f"\nthroughput on the bundled sample's real length mix ({len(texts)} prompts, "
          "max 128 tokens):")
    for threads in (1, 2):
        scorer = Scorer.load(model_dir, threads=threads)
        tokens = [s.tokens for s in scorer.score(texts)]
        unbatched = throughput(scorer, texts, batched=False)
        batched = throughput(scorer, texts, batched=True)
        print(f"  {threads} thread(s): unbatched {unbatched:6.1f} req/s, batched (32, sorted by "
              f"length) {batched:6.1f} req/s, x{batched / unbatched:.2f}; "
              f"tokens mean {np.mean(tokens):.0f}, p50 {np.median(tokens):.0f}")

    against: Path | None = args.against
    if against is not None:
        print(f"\nbatch 1, 1 thread, interleaved: {model_dir.name} against {against} "
              f"({(against / 'model.onnx').stat().st_size / 2**20:.1f} MiB):")
        for n in (32, 64, 128):
            a = Scorer.load(model_dir, threads=1, max_tokens=n)
            b = Scorer.load(against, threads=1, max_tokens=n)
            ms_a, ms_b = latency_pair(a, b, long_texts, args.repeats)
            print(f"  {n:3d} tokens: first {percentiles(ms_a)} | second {percentiles(ms_b)}")
        for label, directory in (("first", model_dir), ("second", against)):
            two = Scorer.load(directory, threads=2)
            print(f"  {label}: 2 threads batched sample {throughput(two, texts, True):6.1f} req/s")

    fp32: Path = args.fp32
    if fp32.is_file():
        print("\nint8 vs fp32 (1 thread, batch 1, 64 tokens; 2 threads batched sample):")
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("tokenizer.json", "config.json"):
                shutil.copyfile(model_dir / name, Path(tmp) / name)
            shutil.copyfile(fp32, Path(tmp) / "model.onnx")
            for label, directory in (("int8", model_dir), ("fp32", Path(tmp))):
                size = (directory / "model.onnx").stat().st_size / 2**20
                one = Scorer.load(directory, threads=1, max_tokens=64)
                ms = latency(one, long_texts, args.repeats // 2)
                two = Scorer.load(directory, threads=2)
                tput = throughput(two, texts, batched=True)
                print(f"  {label}: {size:5.1f} MiB, {percentiles(ms)}, batched {tput:6.1f} req/s")
    else:
        print(f"\n(no fp32 model at {fp32}: int8 vs fp32 skipped)")


if __name__ == "__main__":
    main()
