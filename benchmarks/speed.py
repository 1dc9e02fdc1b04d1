"""Speed and memory benchmark of the featurizers on the CPU, measured side by side.

Sections (all in one run, so that they share the machine's state), and their goals:

1. ``transform`` images/s on in-memory arrays vs a bare forward pass of ``backbone_`` on
   the same preprocessed batches (same device and batch size) -> ratio (goal: >= 0.9
   for both featurizers at every image size); plus the bare forward without
   ``channels_last``, to show what it buys.
2. CAE fit time per epoch per 1,000 images (maps read from the cache): a measurement,
   no goal.
3. ``GridSearchCV`` (3 bottlenecks x 2 layer_sizes x 3 folds) with and without the
   backbone-feature cache, and one fit + transform, with the images pushed through the
   backbone and the seconds spent in it (goal: with the cache, the backbone work of the
   whole search -- the images it pushes through the backbone -- <= 1.5x that of one
   fit + transform; the seconds, tiny at the default sizes, are shown beside it).
4. Peak memory of ``fit`` for growing N, with and without a disk cache (goal: flat with
   the cache -- from the smallest to the largest N, the anonymous memory grows by at
   most 10% of what the maps grow by), and how the time grows with N (goal: linear --
   with and without the cache, the CPU seconds per 1,000 images at no N exceed 1.5x
   those at a smaller N; fixed costs may make small N dearer per image).
5. The CAE's cost: default ``CAETransferFeaturizer().fit_transform`` against
   ``BackboneFeaturizer().fit_transform`` on BreastMNIST's 546 training images (goal:
   <= 4x), on a quiet machine and with two other CPU-bound torch processes running
   beside them (goal: the CAE slows down no more than 1.5x as much as the baseline).

Prints Markdown tables and writes them to ``benchmarks/results/speed.md``; each section
ends with its verdict (a ``target | measured | met`` table), and a missed goal makes the
script exit with status 1 (as ``gpu_check.py`` does). The default run takes about 3
minutes on 2 quiet CPU cores (28 when they were heavily shared); ``--quick`` about 1;
``--full`` uses the issue's sizes (2,000 images at 128 px).

Usage::

    python benchmarks/speed.py [--quick] [--out benchmarks/results/speed.md]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import MarkdownLog, verdict_table

import sklearn_cae
from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer
from sklearn_cae.backbones import TappedBackbone
from sklearn_cae.evaluation import markdown_table
from sklearn_cae.images import preprocess_batch

PRESETS = {
    # n_128 / n_224: throughput images; grid_*: search data; rss_ns: fit sizes for memory.
    "quick": dict(n_128=64, n_224=32, cae_n=64, grid_n=48, grid_size=32, rss_ns=[250, 1000, 4000]),
    "default": dict(
        n_128=128, n_224=64, cae_n=128, grid_n=96, grid_size=48, rss_ns=[1000, 4000, 16000]
    ),
    "full": dict(
        n_128=2000, n_224=500, cae_n=1000, grid_n=2000, grid_size=128, rss_ns=[1000, 4000, 16000]
    ),
}
BATCH = 64
# A goal: (target, what was measured, met).
Goal = tuple[str, str, bool]
# The goals' thresholds (see the docstring).
MIN_TRANSFORM_RATIO = 0.9
MAX_SEARCH_BACKBONE_RATIO = 1.5
MAX_MEMORY_SLOPE = 0.1
MAX_TIME_PER_IMAGE_GROWTH = 1.5


# --------------------------------------------------------------------------- helpers
def images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Grey uint8 images (as most medical images are), unique per row."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size), dtype=np.uint8)


def timed(fn) -> tuple[float, float]:
    """Wall and CPU (this process, all threads) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


class BackboneMeter:
    """Count the images pushed through any TappedBackbone and the seconds spent there."""

    def __init__(self):
        self.images = 0
        self.seconds = 0.0
        self._forward = TappedBackbone.forward

    def __enter__(self):
        meter, forward = self, self._forward

        def timed(module, x):
            start = time.perf_counter()
            out = forward(module, x)
            meter.seconds += time.perf_counter() - start
            meter.images += len(x)
            return out

        TappedBackbone.forward = timed
        return self

    def __exit__(self, *exc):
        TappedBackbone.forward = self._forward


def machine() -> list[str]:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return [
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- CPU: {model}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        f"- load average at start: {os.getloadavg()[0]:.1f} (1 min)",
        f"- sklearn_cae {sklearn_cae.__version__}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.platform()}",
    ]


# ------------------------------------------------------------------------ sections
DEFAULT_CAE = CAETransferFeaturizer().get_params()


def throughput(size: int, n: int, cae_n: int, repeats: int, cache_root: Path) -> dict:
    """Section 1's table rows at one image size, the transform ratios, section 2's epoch."""
    X = images(n, size, seed=size)
    base = BackboneFeaturizer(image_size=size, batch_size=BATCH, device="cpu").fit(X[:8])
    cae = CAETransferFeaturizer(
        image_size=size,
        batch_size=BATCH,
        device="cpu",
        max_epochs=3,
        patience=None,
        random_state=0,
        cache=cache_root / f"cae{size}",
    )
    cae.fit(X[:cae_n])  # cold cache: computes and stores the maps
    cae.fit(X[:cae_n])  # warm cache: the CAE training alone
    epoch_s = float(np.mean(cae.cae_[0].history[:, "dur"]))
    cae.set_params(cache=None)  # transform below computes every map
    batches = [
        preprocess_batch(
            X[i : i + BATCH, ..., None],
            image_size=(size, size),
            mean=base.input_mean_,
            std=base.input_std_,
        )
        for i in range(0, n, BATCH)
    ]
    contiguous = [b.contiguous() for b in batches]
    plain = copy.deepcopy(base.backbone_).to(memory_format=torch.contiguous_format)

    def bare(module=base.backbone_, data=batches):
        with torch.inference_mode():
            for batch in data:
                module(batch)

    runs = {
        "bare forward of backbone_ (channels_last)": bare,
        "BackboneFeaturizer.transform": lambda: base.transform(X),
        "CAETransferFeaturizer.transform": lambda: cae.transform(X),
    }
    if size == 128:
        runs["bare forward, NCHW model and input"] = lambda: bare(plain, contiguous)
    bare(base.backbone_, batches[:1])  # warm-up
    times = {name: (float("inf"), float("inf")) for name in runs}
    for _ in range(repeats):  # interleaved, best of: the machine is shared
        for name, fn in runs.items():
            wall, cpu = timed(fn)
            times[name] = (min(times[name][0], wall), min(times[name][1], cpu))
    ref_wall, ref_cpu = times["bare forward of backbone_ (channels_last)"]
    rows = [
        [
            size,
            name,
            f"{n / wall:.1f}",
            f"{ref_wall / wall:.2f}",
            f"{n / cpu:.1f}",
            f"{ref_cpu / cpu:.2f}",
        ]
        for name, (wall, cpu) in times.items()
    ]
    featurizers = ("BackboneFeaturizer.transform", "CAETransferFeaturizer.transform")
    return {
        "rows": rows,
        "ratios": {name: ref_wall / times[name][0] for name in featurizers},
        "epoch_s": epoch_s,
        "map": cae.map_shapes_[0],
    }


def grid_search(n: int, size: int, cache_root: Path) -> dict:
    """Section 3's runs: (wall s, CPU s, backbone images, backbone s) by label."""
    X = images(n, size, seed=7)
    y = np.arange(n) % 2
    params = dict(image_size=size, batch_size=BATCH, device="cpu", max_epochs=3, random_state=0)
    grid = {"feat__bottleneck": [16, 32, 64], "feat__layer_sizes": [(64,), (128, 64)]}

    def pipe(cache):
        feat = CAETransferFeaturizer(cache=cache, **params)
        return Pipeline([("feat", feat), ("clf", LogisticRegression(max_iter=1000))])

    pipe(None).fit(X[:8], y[:8])  # warm-up: weights read once per process, lazy imports
    results = {}
    for label, run in [
        ("one fit + transform (no cache)", lambda: pipe(None).fit(X, y).predict(X)),
        ("GridSearchCV, no cache", lambda: GridSearchCV(pipe(None), grid, cv=3).fit(X, y)),
        (
            "GridSearchCV, cache (cold)",
            lambda: GridSearchCV(pipe(str(cache_root / "grid")), grid, cv=3).fit(X, y),
        ),
    ]:
        with BackboneMeter() as meter:
            seconds, cpu = timed(run)
        results[label] = (seconds, cpu, meter.images, meter.seconds)
    return results


# --------------------------------------------------------------------------- memory
def _rss_child(n: int, cached: bool, size: int, backbone: str) -> None:
    """Run in a subprocess: fit on N images, print peak memory and times as JSON."""
    fields = {}

    def sample(stop: threading.Event):
        while not stop.is_set():
            with open("/proc/self/status") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "RssAnon", "RssFile"):
                        kib = int(value.split()[0])
                        fields[key] = max(fields.get(key, 0), kib)
            stop.wait(0.01)

    torch.manual_seed(0)
    if backbone == "stand-in":
        # A cheap stand-in with large maps (32 x 16 x 16 at 64 px, 16 KiB each in
        # float16): the maps held for the CAE, not the backbone, are what grows with N.
        kwargs = dict(backbone=nn.Sequential(nn.Conv2d(3, 32, 4, stride=4), nn.ReLU()), layer="1")
    else:
        kwargs = dict(layer="blocks.1")
    X = images(n, 28, seed=n)
    with tempfile.TemporaryDirectory() as tmp:
        featurizer = CAETransferFeaturizer(
            image_size=size,
            batch_size=BATCH,
            layer_sizes=(4,),
            bottleneck=2,
            max_epochs=1,
            device="cpu",
            random_state=0,
            cache=tmp if cached else None,
            **kwargs,
        )
        featurizer.fit(X[:8])  # imports, weights: not part of the measurement
        stop = threading.Event()
        thread = threading.Thread(target=sample, args=(stop,), daemon=True)
        with open("/proc/self/status") as f:
            base = {
                k: int(v.split()[0])
                for k, _, v in (line.partition(":") for line in f)
                if k in ("VmRSS", "RssAnon")
            }
        thread.start()
        seconds, cpu = timed(lambda: featurizer.fit(X))
        stop.set()
        thread.join()
        maps = int(np.prod(featurizer.map_shapes_[0])) * 2 * n / 2**20
    print(
        json.dumps(
            {
                "n": n,
                "cached": cached,
                "seconds": seconds,
                "cpu": cpu,
                "maps_mib": maps,
                "anon_peak_mib": fields["RssAnon"] / 1024,
                "anon_growth_mib": (fields["RssAnon"] - base["RssAnon"]) / 1024,
                "rss_peak_mib": fields["VmRSS"] / 1024,
                "file_peak_mib": fields["RssFile"] / 1024,
            }
        )
    )


def memory(ns: list[int], size: int, backbone: str) -> list[dict]:
    """Section 4's measurements: one fresh process per N and cache setting."""
    rows = []
    for cached in (False, True):
        for n in ns:
            cmd = [sys.executable, __file__, "--rss-child", str(n), str(int(cached)), str(size)]
            cmd.append(backbone)
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def memory_table(rows: list[dict]) -> str:
    header = [
        "cache", "N", "maps MiB", "anon growth MiB", "anon peak MiB", "RSS peak MiB",
        "fit wall s", "fit CPU s", "CPU s per 1k",
    ]  # fmt: skip
    return markdown_table(
        header,
        [
            [
                "disk cache" if row["cached"] else "no cache",
                row["n"],
                f"{row['maps_mib']:.0f}",
                f"{row['anon_growth_mib']:.0f}",
                f"{row['anon_peak_mib']:.0f}",
                f"{row['rss_peak_mib']:.0f}",
                f"{row['seconds']:.1f}",
                f"{row['cpu']:.1f}",
                f"{1000 * row['cpu'] / row['n']:.2f}",
            ]
            for row in rows
        ],
    )


# -------------------------------------------------------------------------- goals
def transform_goals(ratios: dict[int, dict[str, float]]) -> list[Goal]:
    """Section 1: each featurizer's transform >= 0.9x a bare forward, at each size."""
    return [
        (
            f"{name} >= {MIN_TRANSFORM_RATIO}x a bare forward's images/s at {size} px",
            f"{ratio:.2f}x",
            ratio >= MIN_TRANSFORM_RATIO,
        )
        for size, by_name in ratios.items()
        for name, ratio in by_name.items()
    ]


def search_goals(results: dict) -> list[Goal]:
    """Section 3: the cached search's backbone images <= 1.5x one fit + transform's."""
    _, _, single_images, single_s = results["one fit + transform (no cache)"]
    _, _, images, seconds = results["GridSearchCV, cache (cold)"]
    ratio = images / single_images
    target = (
        f"GridSearchCV with the cache: backbone images <= {MAX_SEARCH_BACKBONE_RATIO}x "
        "those of one fit + transform"
    )
    measured = (
        f"{ratio:.2f}x ({images} vs {single_images}; backbone seconds {seconds / single_s:.2f}x)"
    )
    return [(target, measured, ratio <= MAX_SEARCH_BACKBONE_RATIO)]


def memory_goals(rows: list[dict]) -> list[Goal]:
    """Section 4: memory flat with the cache; CPU time per image steady over N."""
    cached = sorted((r for r in rows if r["cached"]), key=lambda r: r["n"])
    small, large = cached[0], cached[-1]
    slope = (large["anon_growth_mib"] - small["anon_growth_mib"]) / (
        large["maps_mib"] - small["maps_mib"]
    )
    goals = [
        (
            f"memory flat with the disk cache: anonymous memory grows by <= "
            f"{MAX_MEMORY_SLOPE:.0%} of the maps' growth from N={small['n']} to N={large['n']}",
            f"{small['anon_growth_mib']:.0f} -> {large['anon_growth_mib']:.0f} MiB for maps of "
            f"{small['maps_mib']:.0f} -> {large['maps_mib']:.0f} MiB ({slope:.0%})",
            slope <= MAX_MEMORY_SLOPE,
        )
    ]
    for setting in (False, True):
        runs = sorted((r for r in rows if r["cached"] == setting), key=lambda r: r["n"])
        per_1k = [1000 * r["cpu"] / r["n"] for r in runs]
        # Fixed costs make small N dearer per image; growth past linear is the miss.
        growth = max(later / earlier for i, earlier in enumerate(per_1k) for later in per_1k[i:])
        goals.append(
            (
                f"fit time linear in N ({'disk cache' if setting else 'no cache'}): CPU s per "
                f"1k images at no N above {MAX_TIME_PER_IMAGE_GROWTH}x that at a smaller N",
                " -> ".join(f"{value:.2f}" for value in per_1k) + f" ({growth:.2f}x)",
                growth <= MAX_TIME_PER_IMAGE_GROWTH,
            )
        )
    return goals


# ----------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about 3 minutes")
    parser.add_argument("--full", action="store_true", help="the issue's sizes (hours here)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rss-backbone", choices=["stand-in", "lite0"], default="stand-in")
    parser.add_argument("--out", default="benchmarks/results/speed.md")
    parser.add_argument(
        "--sections", default="12345", help="which sections to run, e.g. 3 or 125 (default all)"
    )
    parser.add_argument("--rss-child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--burn", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.burn:
        _burn(args.burn)
        return 0
    if args.rss_child:
        n, cached, size, backbone = args.rss_child
        _rss_child(int(n), bool(int(cached)), int(size), backbone)
        return 0
    preset = PRESETS["quick" if args.quick else "full" if args.full else "default"]
    started = time.perf_counter()
    out = MarkdownLog()

    out("# Speed and memory benchmark")
    out("")
    out(f"Command: `python benchmarks/speed.py {' '.join(sys.argv[1:])}`")
    out("")
    for line in machine():
        out(line)
    out(
        "- Note: this machine's 2 cores were shared with other jobs during the run (see the "
        "load averages), so absolute numbers are noisy; the ratios are measured side by "
        "side, interleaved, best of repeats."
    )
    out("")
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache_root = Path(tmp)
        if "1" in args.sections or "2" in args.sections:
            goals += sections_1_2(preset, args, out, cache_root)
        if "3" in args.sections:
            goals += section_3(preset, out, cache_root)
    if "4" in args.sections:
        goals += section_4(preset, args, out)
    if "5" in args.sections:
        goals += section_5(args, out)
    total = time.perf_counter() - started
    missed = [target for target, _, met in goals if not met]
    out(
        f"Goals met: {len(goals) - len(missed)} of {len(goals)}"
        + (f"; missed: {'; '.join(missed)}." if missed else ".")
    )
    out("")
    out(f"Load average at end: {os.getloadavg()[0]:.1f}. Total time: {total:.0f} s.")
    out.write(args.out)
    return 1 if missed else 0


def verdict(goals: list[Goal], out) -> list[Goal]:
    """Print a section's verdict table; return its goals."""
    out(verdict_table(goals))
    out("")
    return goals


def sections_1_2(preset, args, out, cache_root) -> list[Goal]:
    out("## 1. transform vs a bare backbone forward (efficientnet_lite0, blocks.4)")
    out("")
    out(
        f"In-memory uint8 grey arrays; batch_size={BATCH}; CPU. 'bare' runs `backbone_` on "
        "batches preprocessed beforehand; `transform` includes preprocessing (on the "
        "device, batched), the backbone, float16 rounding, the CAE encoder and pooling."
    )
    out("")
    t128 = throughput(128, preset["n_128"], preset["cae_n"], args.repeats, cache_root)
    t224 = throughput(224, preset["n_224"], min(preset["cae_n"], 64), args.repeats, cache_root)
    header = ["px", "what", "images/s (wall)", "ratio to bare", "images/CPU-s", "CPU ratio to bare"]
    out(markdown_table(header, t128["rows"] + t224["rows"]))
    out("")
    goals = verdict(transform_goals({128: t128["ratios"], 224: t224["ratios"]}), out)
    out("## 2. CAE training")
    out("")
    c, h, w = t128["map"]
    out(
        f"CAETransferFeaturizer defaults (layer_sizes={DEFAULT_CAE['layer_sizes']}, "
        f"bottleneck={DEFAULT_CAE['bottleneck']}, sparsity={DEFAULT_CAE['sparsity']}) on "
        f"{c}x{h}x{w} maps (128 px) of {preset['cae_n']} images, read from the cache: "
        f"{t128['epoch_s']:.2f} s per epoch, i.e. "
        f"**{1000 * t128['epoch_s'] / preset['cae_n']:.2f} s per epoch per 1,000 images**."
    )
    out("")
    out("No goal for this section: a measurement.")
    out("")
    return goals


def section_3(preset, out, cache_root) -> list[Goal]:
    out(
        f"## 3. GridSearchCV: 3 bottlenecks x 2 layer_sizes x 3 folds "
        f"({preset['grid_n']} images, {preset['grid_size']} px, max_epochs=3, n_jobs=1)"
    )
    out("")
    out(
        "'backbone images' counts the images pushed through the backbone; 'backbone s' "
        "is the time spent in its forward passes. One fit + transform = the pipeline's "
        "fit then predict on the same images (two backbone passes). Each fit also runs "
        "the backbone once on one blank image to learn the map shapes (counted)."
    )
    out("")
    results = grid_search(preset["grid_n"], preset["grid_size"], cache_root)
    single_s, single_cpu, _, single_bb = results["one fit + transform (no cache)"]
    header = [
        "run", "wall s", "wall ratio", "CPU s", "CPU ratio", "backbone images",
        "backbone wall s", "backbone ratio",
    ]  # fmt: skip
    rows = [
        [
            label,
            f"{seconds:.1f}",
            f"{seconds / single_s:.2f}",
            f"{cpu:.1f}",
            f"{cpu / single_cpu:.2f}",
            n_images,
            f"{bb:.1f}",
            f"{bb / single_bb:.2f}",
        ]
        for label, (seconds, cpu, n_images, bb) in results.items()
    ]
    out(markdown_table(header, rows))
    out("")
    return verdict(search_goals(results), out)


def section_4(preset, args, out) -> list[Goal]:
    backbone = args.rss_backbone if not args.full else "lite0"
    size = 64
    out(f"## 4. Memory and scaling of fit with N ({backbone} backbone, {size} px, 1 epoch)")
    out("")
    out(
        "Each row is a fresh process fitting on N unique 28x28 images (cold cache). "
        "'anon' is the process's anonymous memory (heap: what it holds in RAM), sampled "
        "every 10 ms; 'growth' is its peak minus its level just before fit. 'RSS' adds "
        "file-backed pages, including the memory-mapped maps the kernel may drop at will. "
        "'maps' is the float16 size of all training maps."
    )
    if backbone == "stand-in":
        out(
            "The stand-in backbone is one strided convolution (32 x 16 x 16 maps), so 16k "
            "images fit in the time budget; the memory at stake is the maps held for the "
            "CAE, which does not depend on which network made them. CAE: layer_sizes=(4,), "
            "bottleneck=2, to keep the epoch short."
        )
    out("")
    rows = memory(preset["rss_ns"], size, backbone)
    out(memory_table(rows))
    out("")
    return verdict(memory_goals(rows), out)


# ---------------------------------------------------------------------- CAE cost
def _burn(seconds: float) -> None:
    """Run in a subprocess: keep the cores busy as another torch job would."""
    x = torch.randn(32, 64, 32, 32)
    conv = nn.Conv2d(64, 64, 3, padding=1)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conv(x).sum().backward()


def _breast_or_stand_in() -> tuple[np.ndarray, str]:
    try:
        from sklearn_cae.datasets import load_medmnist

        return load_medmnist("breastmnist", split="train")[0], "BreastMNIST's training split"
    except Exception:  # offline without $MEDMNIST_ROOT: same count and size
        return images(546, 28, seed=5), "546 random 28x28 images (BreastMNIST unavailable)"


def _paired_times(X: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each featurizer's fit_transform, interleaved, per repeat."""
    runs = {
        "BackboneFeaturizer": lambda: BackboneFeaturizer().fit_transform(X),
        "CAETransferFeaturizer": lambda: CAETransferFeaturizer(random_state=0).fit_transform(X),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run)[0])
    return times


def section_5(args, out) -> list[Goal]:
    X, what = _breast_or_stand_in()
    repeats = max(3, args.repeats)
    out("## 5. The CAE's cost against the backbone features (default parameters)")
    out("")
    out(
        f"`fit_transform` of {what} ({len(X)} images), CPU, {repeats} interleaved repeats "
        "per condition, medians. 'loaded': two other processes run a torch convolution "
        "loop (torch's default threads each) on the same cores for the whole measurement."
    )
    out("")
    BackboneFeaturizer(image_size=32).fit_transform(X[:8])  # weights, imports: not timed
    quiet = _paired_times(X, repeats)
    burners = [subprocess.Popen([sys.executable, __file__, "--burn", "900"]) for _ in range(2)]
    try:
        time.sleep(2)
        loaded = _paired_times(X, repeats)
    finally:
        for burner in burners:
            burner.kill()
    slowdown, rows = {}, []
    for name in quiet:
        q, l_ = float(np.median(quiet[name])), float(np.median(loaded[name]))
        slowdown[name] = l_ / q
        rows.append([name, f"{q:.1f}", f"{l_:.1f}", f"{l_ / q:.2f}x"])
    out(markdown_table(["featurizer", "quiet s", "loaded s", "slowdown under load"], rows))
    out("")
    ratio = np.median(np.divide(quiet["CAETransferFeaturizer"], quiet["BackboneFeaturizer"]))
    ratio_loaded = np.divide(loaded["CAETransferFeaturizer"], loaded["BackboneFeaturizer"])
    relative = slowdown["CAETransferFeaturizer"] / slowdown["BackboneFeaturizer"]
    goals = [
        (
            "CAE fit_transform <= 4x BackboneFeaturizer's (quiet; median of paired ratios)",
            f"{ratio:.1f}x (loaded: {np.median(ratio_loaded):.1f}x)",
            ratio <= 4,
        ),
        ("CAE slowdown under load <= 1.5x the baseline's", f"{relative:.2f}x", relative <= 1.5),
    ]
    return verdict(goals, out)


if __name__ == "__main__":
    sys.exit(main())
