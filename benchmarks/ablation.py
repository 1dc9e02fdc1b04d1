"""Design studies of the CAE (``docs/method.md``), on backbone maps computed once per data set.

Two studies, chosen by ``--set``:

* ``full``: the first ablation -- the CAE (64-channel dense code) on each layer from
  ``blocks.3`` to ``conv_head``, wider and deeper codes, denoising, pooling of the code,
  codes of several layers, and codes concatenated with the backbone's pooled maps;
  written to ``accuracy.ablation.json``;
* ``sparse``: wide sparse codes against the dense 64-channel code on ``blocks.4``,
  alone and with the backbone's maps; ``accuracy.ablation_sparse.json``.

Each feature set is scored by 5-fold CV balanced accuracy of ``StandardScaler +
SVC(class_weight="balanced")`` on the training images (and, for MedMNIST, by its
scores on the test split), averaged over ``--seeds`` CAE seeds. COVID-19 is
cross-validated over all its images (the CAE sees them without labels);
PneumoniaMNIST's training split is subsampled to 2,000 images.

Usage::

    python benchmarks/ablation.py --set sparse --seeds 2
    python benchmarks/ablation.py --set full --seeds 2
    python benchmarks/ablation.py --quick --set sparse --out /tmp/smoke   # smoke run

The auto-encoders are trained by :func:`sklearn_cae.cae.fit_autoencoder` with
``CAETransferFeaturizer``'s defaults for every setting a study does not name, on maps
standardized by :mod:`sklearn_cae.feature_maps`. Before this script was split from
``accuracy.py`` (``--parts ablation``), the maps were standardized in float64 rather
than float32: a map value may differ from that of the saved results in the last
float16 digit, and the scores by as little.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_common import (  # noqa: E402
    RESULTS,
    EvaluationSet,
    RunConfig,
    add_run_arguments,
    channels_last,
    cv_bacc,
    eval_features,
    load_evaluation_set,
    run_settings,
    write_json,
)

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, available_layers  # noqa: E402
from sklearn_cae.cae import MapViews, fit_autoencoder  # noqa: E402
from sklearn_cae.devices import resolve_device  # noqa: E402
from sklearn_cae.feature_maps import ChannelStatistics, standardize  # noqa: E402
from sklearn_cae.images import preprocess_batch  # noqa: E402
from sklearn_cae.pooling import pool  # noqa: E402

STUDIES = ("full", "sparse")
ABLATION_LAYERS = ("blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "conv_head")
# The CAE of the first ablation (before the sparse code became the default).
ABLATION_BASE = {"bottleneck": 64, "sparsity": 0.0}
# (name, layer, CAETransferFeaturizer parameters) of every auto-encoder trained.
ABLATION_CAES = [
    *[(f"cae {layer}", layer, ABLATION_BASE) for layer in ABLATION_LAYERS[1:]],
    ("cae blocks.4 bottleneck=128", "blocks.4", {**ABLATION_BASE, "bottleneck": 128}),
    ("cae blocks.4 bottleneck=256", "blocks.4", {**ABLATION_BASE, "bottleneck": 256}),
    (
        "cae blocks.4 layer_sizes=(256,128)",
        "blocks.4",
        {**ABLATION_BASE, "layer_sizes": (256, 128)},
    ),
    ("cae blocks.4 noise=0.2", "blocks.4", {**ABLATION_BASE, "noise": 0.2}),
    ("cae blocks.4 noise=0.5", "blocks.4", {**ABLATION_BASE, "noise": 0.5}),
    ("cae blocks.6 noise=0.5", "blocks.6", {**ABLATION_BASE, "noise": 0.5}),
]
# Code width and sparsity of the blocks.4 CAE (all other parameters at their defaults).
SPARSE_CAES = {
    "bottleneck=64": {"bottleneck": 64, "sparsity": 0.0},
    "bottleneck=256": {"bottleneck": 256, "sparsity": 0.0},
    "bottleneck=256 sparsity=0.1": {"bottleneck": 256, "sparsity": 0.1},
}
OUTPUT_FILES = {"full": "accuracy.ablation.json", "sparse": "accuracy.ablation_sparse.json"}


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class AblationConfig(RunConfig):
    """What one run of the studies does; built from the command line."""

    study: str

    @classmethod
    def from_argv(cls, argv: list[str] | None = None) -> AblationConfig:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        add_run_arguments(parser, default_out=RESULTS)
        parser.add_argument("--set", dest="study", default="full", choices=STUDIES)
        args = parser.parse_args(argv)
        return cls(**run_settings(args), study=args.study)


# ----------------------------------------------------------------------------- maps
def ablation_data(name: str, config: AblationConfig) -> tuple[EvaluationSet, np.ndarray, object]:
    """A data set and the ablation's (train, test) indices.

    COVID-19 is cross-validated over all images (the CAE sees them without labels,
    ``test`` is None); PneumoniaMNIST's training split is subsampled to 2,000 images
    to fit the budget.
    """
    data = load_evaluation_set(
        name, medmnist_root=config.medmnist_root, covid_root=config.covid_root, quick=config.quick
    )
    train, test = data.splits[0]
    if name == "covid19_xray":
        train, test = np.arange(len(data.y)), None
    elif name == "pneumoniamnist" and not config.quick:
        train = np.sort(np.random.default_rng(0).choice(train, 2000, replace=False))
    return data, train, test


def ablation_maps(
    data: EvaluationSet, config: AblationConfig, raw_layers=ABLATION_LAYERS
) -> tuple[dict, dict]:
    """Raw maps of ``raw_layers`` (float16) and avg / max pooled maps of all layers."""
    layers = available_layers("efficientnet_lite0")
    device = resolve_device(config.device)
    feat = BackboneFeaturizer(
        layer=layers, image_size=config.image_size, device=config.device, balance_blocks=False
    )
    feat.fit(data.X[:2])
    images = channels_last(data.X)
    maps = {name: [] for name in raw_layers}
    pooled = {name: [] for name in layers}
    size = (config.image_size, config.image_size)
    for s in range(0, len(images), 256):
        batch = preprocess_batch(
            images[s : s + 256],
            image_size=size,
            mean=feat.input_mean_,
            std=feat.input_std_,
            device=device,
        )
        with torch.inference_mode():
            outs = [m.float() for m in feat.backbone_(batch)]
        for name, m in zip(layers, outs, strict=False):
            pooled[name].append(pool(m, "avgmax").cpu())
            if name in maps:
                maps[name].append(m.half().cpu())
    return (
        {k: torch.cat(v) for k, v in maps.items()},
        {k: torch.cat(v).numpy() for k, v in pooled.items()},
    )


def standardized(maps: torch.Tensor, fit_index) -> np.ndarray:
    """Maps standardized per channel with the statistics of ``maps[fit_index]`` (float16)."""
    statistics = ChannelStatistics(maps.shape[1])
    statistics.update(maps[fit_index])
    mean, std = statistics.mean_std()
    return standardize(maps.float(), mean, std).half().numpy()


# ------------------------------------------------------------------ auto-encoders
def autoencoder_settings(params: dict, quick: bool) -> dict:
    """Keyword arguments of ``fit_autoencoder``: the featurizer's defaults, then ``params``.

    With ``quick``, 2 epochs.
    """
    defaults = CAETransferFeaturizer().get_params()
    accepted = set(inspect.signature(fit_autoencoder).parameters) - {"views", "seed", "device"}
    settings = {key: value for key, value in defaults.items() if key in accepted}
    settings["net_params"] = defaults["cae_params"]  # the featurizer's name for them
    # The ablation trains without labels: what supervision="auto" does without -1 labels.
    settings["supervision"] = 0.0
    settings.update(params)
    if quick:
        settings["max_epochs"] = 2
    return settings


def train_codes(maps: np.ndarray, fit_index, seed: int, config, params: dict) -> torch.Tensor:
    """Train one CAE on ``maps[fit_index]`` as the featurizer does; return all code maps."""
    device = resolve_device(config.device)
    settings = autoencoder_settings(params, config.quick)
    net = fit_autoencoder(MapViews(maps[fit_index]), **settings, seed=seed, device=device)
    with torch.inference_mode():
        codes = [
            net.module_.encode(torch.from_numpy(maps[s : s + 512]).to(device)).cpu()
            for s in range(0, len(maps), 512)
        ]
    return torch.cat(codes)


# -------------------------------------------------------------------------- scoring
def summarize_ablation(features: dict, data: EvaluationSet, train, test, n_jobs: int) -> dict:
    """CV (and test) balanced accuracy of each feature set, mean over its seeds.

    Keys ``"<name> | seed <k>"`` are grouped by ``<name>``; feature sets with
    non-finite values are reported and dropped.
    """
    from joblib import Parallel, delayed

    y, k = data.y, data.n_classes

    def evaluate(F):
        out = {"cv_bacc": cv_bacc(F[train], y[train])}
        if test is not None:
            out.update(eval_features(F[train], y[train], F[test], y[test], k))
        return out

    bad = [key for key, F in features.items() if not np.isfinite(F).all()]
    if bad:
        print(f"[ablation] non-finite features (dropped): {bad}", flush=True)
    keys = [key for key in features if key not in bad]
    evaluated = Parallel(n_jobs=n_jobs)(delayed(evaluate)(features[key]) for key in keys)
    rows: dict[str, list] = {}
    for key, out in zip(keys, evaluated, strict=True):
        rows.setdefault(key.split(" | seed")[0], []).append(out)
    return {
        key: {m: float(np.mean([r[m] for r in runs])) for m in runs[0]}
        | {"cv_bacc_std": float(np.std([r["cv_bacc"] for r in runs])), "n_seeds": len(runs)}
        for key, runs in rows.items()
    }


# -------------------------------------------------------------------------- studies
def full_study(config: AblationConfig) -> dict:
    """Layers, code width and depth, denoising, pooling and combinations of codes."""
    results = {}
    for name in config.datasets:
        start = time.perf_counter()
        data, train, test = ablation_data(name, config)
        maps, pooled = ablation_maps(data, config)
        print(f"[ablation] {name}: maps {time.perf_counter() - start:.0f}s", flush=True)
        bb = {f"backbone {k} avg": v[:, : v.shape[1] // 2] for k, v in pooled.items()}
        features = {**{f"backbone {k} avgmax": v for k, v in pooled.items()}, **bb}
        features["backbone blocks.3-6+head avg"] = np.hstack(
            [bb[f"backbone {k} avg"] for k in ABLATION_LAYERS[1:]]
        )
        standard = {k: standardized(v, train) for k, v in maps.items()}
        for seed in range(config.seeds):
            codes = {}
            for cae_name, layer, params in ABLATION_CAES:
                code = train_codes(standard[layer], train, seed, config, params)
                for pooling in ("avg", "max", "avgmax", "spp"):
                    if pooling == "avgmax" or cae_name == "cae blocks.4":
                        key = f"{cae_name} {pooling}" if pooling != "avgmax" else cae_name
                        codes[key] = pool(code.float(), pooling).numpy()
            for combo in (
                ("blocks.4", "blocks.6"),
                ("blocks.3", "blocks.4", "blocks.5", "blocks.6"),
            ):
                codes["cae " + "+".join(combo)] = np.hstack([codes[f"cae {k}"] for k in combo])
            for layer in ("blocks.4", "blocks.5", "blocks.6", "conv_head"):
                for code_name in (
                    f"cae {layer}",
                    "cae blocks.4 noise=0.5",
                    "cae blocks.4+blocks.6",
                ):
                    codes[f"{code_name} + backbone {layer} avg"] = np.hstack(
                        [codes[code_name], bb[f"backbone {layer} avg"]]
                    )
            for key, value in codes.items():
                features[f"{key} | seed {seed}"] = value
            print(f"[ablation] {name}: seed {seed} {time.perf_counter() - start:.0f}s", flush=True)

        results[name] = summarize_ablation(features, data, train, test, config.n_jobs)
        results[name]["_seconds"] = time.perf_counter() - start
        print(f"[ablation] {name}: done {time.perf_counter() - start:.0f}s", flush=True)
        write_json(results, config.out / OUTPUT_FILES["full"])
    return results


SeedFeatures = Callable[[np.ndarray, np.ndarray, np.ndarray, int], dict]


def blocks4_study(config: AblationConfig, label: str, seed_features: SeedFeatures) -> dict:
    """Run one blocks.4 study on every data set and write its file.

    ``seed_features(standard, bb, train, seed)`` returns ``{name: features}`` for one
    seed, from the standardized blocks.4 maps and their avg+max pooled backbone vector.
    """
    results = {}
    for name in config.datasets:
        start = time.perf_counter()
        data, train, test = ablation_data(name, config)
        maps, pooled = ablation_maps(data, config, raw_layers=("blocks.4",))
        bb = pooled["blocks.4"]
        standard = standardized(maps["blocks.4"], train)
        features = {"backbone blocks.4 avg": bb[:, : bb.shape[1] // 2]}
        for seed in range(config.seeds):
            for key, value in seed_features(standard, bb, train, seed).items():
                features[f"{key} | seed {seed}"] = value
        results[name] = summarize_ablation(features, data, train, test, config.n_jobs)
        results[name]["_seconds"] = time.perf_counter() - start
        print(f"[{label}] {name}: {time.perf_counter() - start:.0f}s", flush=True)
        write_json(results, config.out / OUTPUT_FILES[config.study])
    return results


def sparse_study(config: AblationConfig) -> dict:
    """Wide sparse codes against the dense 64-channel code, alone and with the backbone."""

    def seed_features(standard, bb, train, seed):
        avg_bb, features = bb[:, : bb.shape[1] // 2], {}
        for key, params in SPARSE_CAES.items():
            codes = train_codes(standard, train, seed, config, params).float()
            active = float((codes > 0).float().mean())
            print(f"[sparse ablation] {key} seed {seed}: active {active:.2f}", flush=True)
            code = pool(codes, "avg").numpy()
            features[f"code {key}"] = code
            features[f"code {key} + backbone blocks.4 avg"] = np.hstack([code, avg_bb])
        return features

    return blocks4_study(config, "sparse ablation", seed_features)


STUDY_RUNNERS = {"full": full_study, "sparse": sparse_study}


def main(argv: list[str] | None = None) -> dict:
    """Run the study chosen by ``--set``; return its results per data set."""
    config = AblationConfig.from_argv(argv)
    config.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    return STUDY_RUNNERS[config.study](config)


if __name__ == "__main__":
    main()
