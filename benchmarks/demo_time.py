"""The demo's wall time against its goal (<= 3 min on 2 quiet cores), with its table.

Runs ``python -m sklearn_cae demo`` (what ``make demo`` runs once ``.venv`` exists) as a
subprocess ``--repeats`` times, one after the other, and writes each run's wall time,
the machine's load average just before it, and the demo's table to
``benchmarks/results/demo_time.{json,md}``. The Markdown ends in the goal: the median
run within ``--goal-seconds`` (180). Exits 1 when the goal is missed, or when a run's
table differs from the first run's (the demo's scores are seeded).

"Quiet" is for the reader to judge from the load averages: a load above the core count
means another process shared the cores.

Usage::

    python benchmarks/demo_time.py [--repeats 2] [--goal-seconds 180]
    # an older release's demo, e.g. before the parallel folds (1d579b8)
    git worktree add ../old 1d579b8
    python benchmarks/demo_time.py --repeats 1 --output /tmp/old.md \
        --command sh -c "cd ../old && exec python -m sklearn_cae demo"
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import RESULTS, MarkdownLog, default_medmnist_root, verdict_table, write_json

DEMO = [sys.executable, "-m", "sklearn_cae", "demo"]


def run_once(command: list[str]) -> dict:
    """One run of ``command``: its wall time, the 1-minute load before it, its table."""
    # BreastMNIST from where `make demo` reads it (the shared data), not a download.
    env = {**os.environ, "MEDMNIST_ROOT": str(default_medmnist_root())}
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return {"seconds": seconds, "load_before": load, "table": table_lines(done.stdout)}


def table_lines(stdout: str) -> list[str]:
    """The Markdown table the demo prints, without its ``seconds`` column (timings vary)."""
    return [line.rsplit("|", 2)[0] + "|" for line in stdout.splitlines() if line.startswith("|")]


def goals(runs: list[dict], goal_seconds: float) -> list[tuple[str, str, bool]]:
    """(goal, measured, met): the median wall time, and the same table on every run."""
    median = statistics.median(run["seconds"] for run in runs)
    same = all(run["table"] == runs[0]["table"] for run in runs)
    return [
        (
            f"median wall time <= {goal_seconds:.0f} s",
            f"{median:.0f} s ({_minutes(median)})",
            median <= goal_seconds,
        ),
        ("the same table on every run", "yes" if same else "no", same),
    ]


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--goal-seconds", type=float, default=180.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "demo_time.md")
    parser.add_argument(
        "--command",
        nargs=argparse.REMAINDER,
        help="what to time instead of this checkout's demo (last option), e.g. an older "
        'checkout\'s: sh -c "cd ../old && exec python -m sklearn_cae demo"',
    )
    args = parser.parse_args(argv)
    command = args.command or DEMO
    runs = []
    for k in range(args.repeats):
        runs.append(run_once(command))
        print(f"run {k + 1}/{args.repeats}: {runs[-1]['seconds']:.1f} s", flush=True)
    results = goals(runs, args.goal_seconds)
    # "python", not this machine's interpreter path
    shown = " ".join(["python" if command[0] == sys.executable else command[0], *command[1:]])
    write_json(
        {"command": shown, "cpu_count": os.cpu_count(), "runs": runs},
        args.output.with_suffix(".json"),
    )
    out = MarkdownLog()
    out("# The demo's wall time")
    out()
    out(
        f"`benchmarks/demo_time.py`: `{shown}`, {args.repeats} run(s) one after the other, "
        f"{os.cpu_count()} CPU cores, no GPU. The 1-minute load average decays slowly: "
        "before a run that follows another, it still holds the previous run's load."
    )
    out()
    for k, run in enumerate(runs, 1):
        out(
            f"- run {k}: {run['seconds']:.1f} s ({_minutes(run['seconds'])}), "
            f"1-minute load average before it {run['load_before']:.2f}"
        )
    out()
    out("The table (the last run's, without its seconds column):")
    out()
    for line in runs[-1]["table"]:
        out(line)
    out()
    out(verdict_table(results))
    out.write(args.output)
    return 0 if all(met for _, _, met in results) else 1


if __name__ == "__main__":
    sys.exit(main())
