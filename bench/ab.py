"""A/B of two checkouts of export_pipeline on one seeded source, interleaved: is a change slower?

    bench/.venv/bin/python bench/ab.py BASE_DIR HEAD_DIR [--scale 1] [--rounds 3]

BASE_DIR and HEAD_DIR are checkouts (``git worktree add``) whose bench environment exists (run
``make bench BENCH_ARGS="--scale 0.01 --repeat 1 --only ours"`` in each once). Measured, in the
bench's own worker processes (``bench/run.py _worker``): the full export of every dataset
(``run_dataset_batch``, no Dagster, no lake) against the binary-COPY limit of the same run, then
micro-batches (the bench's 10k events + 1k entity versions each) on each side's warehouse. The
two sides alternate which goes first, so drift of the machine's load falls on both. Prints
per-round times and the paired differences (head over base).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULT_PREFIX = "BENCH_RESULT "


def worker(checkout: Path, kind: str, dsn: str, data_dir: Path) -> dict:
    (data_dir / "dagster_home").mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        EXPORT_SOURCE_DSN=dsn,
        EXPORT_DATA_DIR=str(data_dir),
        DAGSTER_HOME=str(data_dir / "dagster_home"),
        PYTHONWARNINGS="ignore",
    )
    python = checkout / "bench" / ".venv" / "bin" / "python"
    cmd = [str(python), "bench/run.py", "_worker", kind, json.dumps({"dsn": dsn})]
    done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise SystemExit(f"{checkout} {kind} failed:\n{done.stderr[-3000:]}")


def paired(base: list[float], head: list[float]) -> str:
    diffs = [100 * (h / b - 1) for b, h in zip(base, head, strict=True)]
    return (
        f"head over base: median {statistics.median(diffs):+.1f}%, mean "
        f"{statistics.mean(diffs):+.1f}% (pairs: {', '.join(f'{d:+.1f}%' for d in diffs)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("head", type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "head": args.head.resolve()}
    sys.path[:0] = [str(sides["head"]), str(sides["head"] / "bench")]
    import pgserver
    import run as bench  # bench/run.py of the head checkout: its source mutations

    from export_pipeline.source import seed_source

    work = Path(tempfile.mkdtemp(prefix="export_ab-"))
    server = pgserver.get_server(work / "pgdata", cleanup_mode="delete")
    dsn = str(server.get_uri())
    seed_source(dsn, scale=args.scale, days=7)
    full: dict[str, list[float]] = {"base": [], "head": []}
    ratio: dict[str, list[float]] = {"base": [], "head": []}
    for r in range(args.rounds):
        copy = worker(sides["head"], "copy", dsn, work / f"copy{r}")["seconds"]
        for side in ("base", "head") if r % 2 == 0 else ("head", "base"):
            seconds = worker(sides[side], "ours", dsn, work / f"full{r}-{side}")["seconds"]
            full[side].append(seconds)
            ratio[side].append(seconds / copy)
            print(f"full round {r + 1} {side}: {seconds:.2f} s ({seconds / copy:.2f}x COPY)")
    micro: dict[str, list[float]] = {"base": [], "head": []}
    for r in range(args.rounds + 2):
        bench.new_events(dsn, bench.MICROBATCH_EVENTS, f"ab{r}")
        bench.new_entity_versions(dsn, bench.MICROBATCH_ENTITIES, f"ab{r}")
        for side in ("base", "head") if r % 2 == 0 else ("head", "base"):
            seconds = worker(sides[side], "ours", dsn, work / f"full0-{side}")["seconds"]
            micro[side].append(seconds)
            print(f"micro-batch round {r + 1} {side}: {seconds:.3f} s")
    print(f"full export, {paired(full['base'], full['head'])}")
    print(f"full export x COPY, {paired(ratio['base'], ratio['head'])}")
    print(f"micro-batch, {paired(micro['base'], micro['head'])}")
    server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
