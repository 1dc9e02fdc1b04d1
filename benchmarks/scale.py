"""Many images: featurizing N PNG files cold, warm, after a SIGKILL, under a cache cap.

The targets of the "many images" issue, measured on N 64-px PNG files written from the
shared MedMNIST sets (PneumoniaMNIST and BreastMNIST, all splits, upsampled from 28 px;
past their 6,636 images the copies are flipped or rotated, so every file differs) into
a temporary folder. Each run is a fresh process that fits a ``CAETransferFeaturizer``
(defaults, ``image_size=64``, ``random_state=0``) on the files without labels and writes
their features to ``.parquet`` with :func:`sklearn_cae.feature_files.fit_write_features`
(what ``sklearn-cae featurize FOLDER -o OUT --cache DIR`` runs):

1. cold (empty cache): images per second; peak RSS of the process <= 1.5 GiB;
2. warm (full cache): <= 0.5x the cold time, features identical;
3. killed with SIGKILL at 40% of the cold time, then run again: <= 0.85x the cold
   time, output identical to the cold run's, nothing left beside it;
4. a cache capped (``FeatureCache(max_size=...)``) at half the cold run's cache size
   ends within 5% of the cap;
5. throughput: ``BackboneFeaturizer.transform`` of the files (decoding in DataLoader
   workers) >= 0.8x the bare backbone forward on the same images pre-decoded to
   tensors, side by side in one process;
6. the growth of time and RSS with N (run several N), extrapolated to 100,000 files.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scale.py --n 2000 5000

Results go to ``benchmarks/results/scale.md``; the exit status is 1 when a goal is
missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common

from bench_common import RESULTS, default_medmnist_root, verdict_table

from sklearn_cae.evaluation import markdown_table

PARAMS = {"image_size": 64, "random_state": 0}
GIB = 1 << 30


# ------------------------------------------------------------------------------- data
def write_images(folder: Path, n: int, root: Path | None = None) -> list[str]:
    """N distinct 64-px grey PNG files from the shared PneumoniaMNIST and BreastMNIST."""
    from PIL import Image

    root = root or default_medmnist_root()
    pool = []
    for name in ("pneumoniamnist", "breastmnist"):
        with np.load(root / f"{name}.npz") as archive:
            pool += [archive[f"{split}_images"] for split in ("train", "val", "test")]
    pool = np.concatenate(pool)
    paths = []
    for i in range(n):
        image = np.rot90(pool[i % len(pool)], k=(i // len(pool)) % 4)
        if (i // len(pool)) % 8 >= 4:
            image = image[:, ::-1]
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{i:06d}.png"
        Image.fromarray(np.ascontiguousarray(image)).resize((64, 64), Image.BILINEAR).save(path)
        paths.append(str(path))
    return paths


# -------------------------------------------------------------------------- one run
def featurize(folder: str, output: str, cache: str, max_size: str | None) -> None:
    """The work of one run (in a child process): fit, then write the features."""
    from sklearn_cae import CAETransferFeaturizer
    from sklearn_cae.cache import FeatureCache
    from sklearn_cae.feature_files import fit_write_features, list_inputs

    X, names = list_inputs(folder)
    featurizer = CAETransferFeaturizer(cache=FeatureCache(cache, max_size=max_size), **PARAMS)
    fit_write_features(featurizer, X, output, names=names, progress=False)


def run(args: list[str], *, kill_after: float | None = None) -> tuple[float, float, bool]:
    """(wall seconds, peak RSS GiB of the process, killed) of ``scale.py --run ARGS``."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "--run", *args], start_new_session=True)
    killed = False
    if kill_after is not None:
        try:
            child.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the process and its DataLoader workers
            killed = True
    _, status, usage = os.wait4(child.pid, 0)
    if not killed and os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"run {args} failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024 / GIB, killed


def throughput(paths: list[str]) -> tuple[float, float]:
    """Images per second: transform of the files, and the bare forward on tensors."""
    import torch

    from sklearn_cae import BackboneFeaturizer
    from sklearn_cae.images import as_image_source, normalize_batch

    featurizer = BackboneFeaturizer(**{k: v for k, v in PARAMS.items() if k != "random_state"})
    featurizer.fit(paths[:2])
    start = time.perf_counter()
    featurizer.transform(paths)
    files_rate = len(paths) / (time.perf_counter() - start)
    source = as_image_source(paths)
    batches = [
        normalize_batch(unit, featurizer.input_mean_, featurizer.input_std_)
        for _, unit in source.batches(64, image_size=(64, 64))
    ]
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            featurizer.backbone_(batch)
    return files_rate, len(paths) / (time.perf_counter() - start)


# ------------------------------------------------------------------------- scenarios
def measure(n: int, work: Path) -> dict:
    from sklearn_cae.cache import FeatureCache

    paths = write_images(work / "images", n)
    images = str(work / "images")
    out = {"n": n}
    cold_out, cache = work / "cold.parquet", work / "cache"
    out["cold_s"], out["cold_rss"], _ = run([images, str(cold_out), str(cache)])
    natural = FeatureCache(cache).info().size
    out["cache_mib"] = natural / (1 << 20)
    warm_out = work / "warm.parquet"
    out["warm_s"], out["warm_rss"], _ = run([images, str(warm_out), str(cache)])
    out["warm_identical"] = warm_out.read_bytes() == cold_out.read_bytes()

    killed_out, killed_cache = work / "killed.parquet", work / "killed_cache"
    out["kill_at_s"] = 0.4 * out["cold_s"]
    _, _, out["was_killed"] = run(
        [images, str(killed_out), str(killed_cache)], kill_after=out["kill_at_s"]
    )
    out["resumed_s"], _, _ = run([images, str(killed_out), str(killed_cache)])
    out["resumed_identical"] = killed_out.read_bytes() == cold_out.read_bytes()
    out["left_beside"] = sorted(p.name for p in work.glob(".*"))

    cap = natural // 2
    capped = work / "capped_cache"
    run([images, str(work / "capped.parquet"), str(capped), str(cap)])
    out["cap_mib"], out["capped_mib"] = (
        cap / (1 << 20),
        FeatureCache(capped).info().size / (1 << 20),
    )

    out["files_rate"], out["bare_rate"] = throughput(paths)
    for folder in ("cache", "killed_cache", "capped_cache"):
        shutil.rmtree(work / folder, ignore_errors=True)
    return out


def verdicts(row: dict) -> list[tuple[str, str, bool]]:
    cap_error = abs(row["capped_mib"] - row["cap_mib"]) / row["cap_mib"]
    ratio = row["files_rate"] / row["bare_rate"]
    return [
        ("cold peak RSS <= 1.5 GiB", f"{row['cold_rss']:.2f} GiB", row["cold_rss"] <= 1.5),
        (
            "warm <= 0.5x cold, identical",
            f"{row['warm_s'] / row['cold_s']:.2f}x, identical={row['warm_identical']}",
            row["warm_s"] <= 0.5 * row["cold_s"] and row["warm_identical"],
        ),
        (
            "SIGKILL at 40%, rerun <= 0.85x cold, identical, nothing left",
            f"{row['resumed_s'] / row['cold_s']:.2f}x, identical={row['resumed_identical']}, "
            f"left={row['left_beside']}",
            row["was_killed"]
            and row["resumed_s"] <= 0.85 * row["cold_s"]
            and row["resumed_identical"]
            and not row["left_beside"],
        ),
        (
            "capped cache within 5% of the cap",
            f"{row['capped_mib']:.1f} MiB for a {row['cap_mib']:.1f} MiB cap ({cap_error:.1%})",
            cap_error <= 0.05,
        ),
        (
            "files >= 0.8x bare forward",
            f"{row['files_rate']:.0f} vs {row['bare_rate']:.0f} img/s ({ratio:.2f}x)",
            ratio >= 0.8,
        ),
    ]


def summary_table(rows: list[dict]) -> str:
    header = [
        "N", "cold s", "img/s", "cold RSS GiB", "warm s", "resumed s", "cache MiB",
        "capped MiB (cap)", "files / bare img/s",
    ]  # fmt: skip
    cells = [
        [
            f"{r['n']:,}",
            f"{r['cold_s']:.0f}",
            f"{r['n'] / r['cold_s']:.0f}",
            f"{r['cold_rss']:.2f}",
            f"{r['warm_s']:.0f}",
            f"{r['resumed_s']:.0f}",
            f"{r['cache_mib']:.1f}",
            f"{r['capped_mib']:.1f} ({r['cap_mib']:.1f})",
            f"{r['files_rate']:.0f} / {r['bare_rate']:.0f}",
        ]
        for r in rows
    ]
    return markdown_table(header, cells)


def report(rows: list[dict], threads: str) -> tuple[str, bool]:
    lines = [
        "# Many images: featurizing N PNG files",
        "",
        f"`benchmarks/scale.py`; 64-px PNG files, `CAETransferFeaturizer(image_size=64, "
        f"random_state=0)` (defaults otherwise), `OMP_NUM_THREADS={threads}`, "
        f"{os.cpu_count()} CPU cores shared with other work, no GPU.",
        "",
        summary_table(rows),
    ]
    passed = True
    for r in rows:
        goals = verdicts(r)
        lines += ["", f"## N = {r['n']:,}", "", verdict_table(goals)]
        passed &= all(met for _, _, met in goals)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        per_image = (b["cold_s"] - a["cold_s"]) / (b["n"] - a["n"])
        rss_slope = (b["cold_rss"] - a["cold_rss"]) / (b["n"] - a["n"])
        t100k = b["cold_s"] + per_image * (100_000 - b["n"])
        rss100k = b["cold_rss"] + rss_slope * (100_000 - b["n"])
        lines += [
            "",
            "## Growth with N, extrapolated to 100,000 files",
            "",
            f"From N = {a['n']:,} to {b['n']:,}: cold time grows {per_image * 1000:.1f} s per "
            f"1,000 images, peak RSS {rss_slope * 1000 * 1024:.1f} MiB per 1,000 images. "
            f"Linear extrapolation: 100,000 files take about {t100k / 3600:.1f} h cold here "
            f"with peak RSS about {rss100k:.2f} GiB; the cache holds about "
            f"{b['cache_mib'] / b['n'] * 100_000 / 1024:.1f} GiB.",
        ]
    return "\n".join(lines) + "\n", passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--output", type=Path, default=RESULTS / "scale.md")
    parser.add_argument("--run", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        featurize(*args.run[:3], args.run[3] if len(args.run) > 3 else None)
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return 0
    rows = []
    for n in args.n:
        with tempfile.TemporaryDirectory(prefix="sklearn_cae_scale_") as work:
            rows.append(measure(n, Path(work)))
            print(rows[-1], flush=True)
    text, passed = report(rows, os.environ.get("OMP_NUM_THREADS", "unset"))
    args.output.write_text(text)
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
