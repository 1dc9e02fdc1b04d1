"""Accuracy benchmark: CAE features against raw pixels, backbone features and fine-tuning.

Runs every method of issue 4 on BreastMNIST, PneumoniaMNIST, RetinaMNIST (official
train / test splits) and the COVID-19 X-ray set (5-fold CV) and writes
``benchmarks/results/accuracy.{md,json,png}``. ``--parts ablation`` runs the design
study of ``docs/method.md`` on backbone maps computed once per data set.

Usage::

    python benchmarks/accuracy.py                  # the full benchmark (GPU: minutes)
    python benchmarks/accuracy.py --quick --out /tmp/smoke   # tiny smoke subset
    python benchmarks/accuracy.py --parts ablation

Every classifier is ``StandardScaler + SVC(class_weight="balanced")``; stochastic
methods are repeated over ``--seeds`` seeds and reported as mean ± std over
(seed, split) runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.utils.class_weight import compute_class_weight

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sklearn_cae import BackboneFeaturizer, CAETransferFeaturizer, available_layers  # noqa: E402
from sklearn_cae.devices import resolve_device  # noqa: E402
from sklearn_cae.backbones import load_backbone  # noqa: E402
from sklearn_cae.cae import MapViews  # noqa: E402
from sklearn_cae.datasets import load_medmnist, stratified_subset  # noqa: E402
from sklearn_cae.images import preprocess_batch  # noqa: E402
from sklearn_cae.pooling import pool  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
MEDMNIST = ("breastmnist", "pneumoniamnist", "retinamnist")
DATASETS = (*MEDMNIST, "covid19_xray")
FRACTIONS = (0.05, 0.10, 0.25, 1.0)
N_JOBS = -1  # 1 with --quick, where starting worker processes costs more than it saves
# MedMNIST v2 (Yang et al., 2023), Table 3: test (ACC, AUC).
PUBLISHED = {
    "ResNet-18 (28)": {
        "breastmnist": (0.863, 0.901),
        "pneumoniamnist": (0.854, 0.944),
        "retinamnist": (0.524, 0.717),
    },
    "ResNet-50 (224)": {
        "breastmnist": (0.842, 0.866),
        "pneumoniamnist": (0.884, 0.962),
        "retinamnist": (0.511, 0.716),
    },
}


# ----------------------------------------------------------------------------- data
def check_images(X: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, H, W, C) uint8 arrays as channels-last (n, H, W, C)."""
    return X[..., None] if X.ndim == 3 else X


def load_dataset(name: str, args) -> dict:
    """Images, labels and the evaluation splits [(train_index, test_index), ...]."""
    if name == "covid19_xray":
        data = np.load(Path(args.covid_root) / "covid19_xray.npz")
        X, y = data["images"], data["labels"].astype(np.int64)
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        splits = list(cv.split(X, y))
    else:
        X_train, y_train = load_medmnist(name, "train", root=args.medmnist_root)
        X_test, y_test = load_medmnist(name, "test", root=args.medmnist_root)
        X, y = np.concatenate([X_train, X_test]), np.concatenate([y_train, y_test])
        splits = [(np.arange(len(X_train)), np.arange(len(X_train), len(X)))]
    if args.quick:  # a stratified handful of images, one split
        rng = np.random.default_rng(0)
        train, test = splits[0]
        train = np.concatenate(
            [rng.choice(train[y[train] == c], 12, replace=False) for c in np.unique(y)]
        )
        test = rng.choice(test, 24, replace=False)
        X, y = X[np.concatenate([train, test])], y[np.concatenate([train, test])]
        splits = [(np.arange(len(train)), np.arange(len(train), len(X)))]
    return {"X": X, "y": y, "splits": splits, "n_classes": int(y.max()) + 1}


# -------------------------------------------------------------------------- metrics
def svc() -> object:
    return make_pipeline(StandardScaler(), SVC(class_weight="balanced"))


def scores(y_true, y_pred, y_score, n_classes: int) -> dict:
    """Accuracy, balanced accuracy and (macro one-vs-rest) ROC AUC."""
    y_score = np.asarray(y_score)
    if n_classes == 2:
        auc = roc_auc_score(y_true, y_score if y_score.ndim == 1 else y_score[:, 1])
    else:  # macro mean of the per-class one-vs-rest AUCs, from any monotone scores
        auc = np.mean([roc_auc_score(y_true == k, y_score[:, k]) for k in range(n_classes)])
    return {
        "acc": accuracy_score(y_true, y_pred),
        "bacc": balanced_accuracy_score(y_true, y_pred),
        "auc": float(auc),
    }


def eval_features(F_train, y_train, F_test, y_test, n_classes) -> dict:
    model = svc().fit(F_train, y_train)
    return scores(y_test, model.predict(F_test), model.decision_function(F_test), n_classes)


def cv_bacc(F, y, folds: int = 5, seed: int = 0) -> float:
    folds = max(2, min(folds, np.bincount(y).min()))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_score(svc(), F, y, cv=cv, scoring="balanced_accuracy", n_jobs=N_JOBS).mean()


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("acc", "bacc", "auc"):
        values = np.array([r[key] for r in runs])
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out["n_runs"] = len(runs)
    return out


def subsample(y, fraction: float, seed: int) -> np.ndarray:
    """A stratified subset of indices with at least 2 labels per class."""
    return stratified_subset(y, fraction, random_state=seed)


# -------------------------------------------------------------------- the methods
def raw_pixels(data, split, args) -> dict:
    X = data["X"].reshape(len(data["X"]), -1).astype(np.float32) / 255.0
    train, test = split
    n_components = min(50, len(train) - 1)
    model = make_pipeline(
        PCA(n_components, random_state=0), StandardScaler(), SVC(class_weight="balanced")
    )
    model.fit(X[train], data["y"][train])
    y_test = data["y"][test]
    return scores(
        y_test, model.predict(X[test]), model.decision_function(X[test]), data["n_classes"]
    )


def backbone_features(data, args) -> tuple[dict, float]:
    """avg-pooled features of every layer, exactly what BackboneFeaturizer(layer=L) gives."""
    layers = available_layers("efficientnet_lite0")
    start = time.perf_counter()
    feat = BackboneFeaturizer(
        layer=layers, image_size=args.image_size, device=args.device, batch_size=128
    )
    F = feat.fit(data["X"][:2]).transform(data["X"])
    widths = np.cumsum([0, *feat.n_channels_])
    per_layer = {name: F[:, a:b] for name, a, b in zip(layers, widths, widths[1:], strict=False)}
    return per_layer, time.perf_counter() - start


def select_layer(per_layer: dict, train, y) -> str:
    """The layer with the best inner 5-fold CV balanced accuracy on the training part."""
    cv = {name: cv_bacc(F[train], y[train]) for name, F in per_layer.items()}
    return max(cv, key=cv.get)


def cae_pipeline(seed: int, args, **params):
    feat = CAETransferFeaturizer(
        image_size=args.image_size, device=args.device, random_state=seed, **params
    )
    if args.quick:
        feat.set_params(max_epochs=2)
    return make_pipeline(feat, StandardScaler(), SVC(class_weight="balanced"))


def cae_features(data, train_unlabelled, seed, args, **params):
    """Fit the CAE featurizer on unlabelled images; return features of every image.

    ``fit_transform`` encodes the training images from the maps computed for fitting,
    so the backbone sees every image once.
    """
    feat = cae_pipeline(seed, args, **params)[0]
    X = data["X"]
    F_train = feat.fit_transform(X[train_unlabelled])
    rest = np.setdiff1d(np.arange(len(X)), train_unlabelled)
    F = np.empty((len(X), F_train.shape[1]), dtype=np.float32)
    F[train_unlabelled] = F_train
    if len(rest):
        F[rest] = feat.transform(X[rest])
    return F


# ------------------------------------------------------------------ fine-tuning
class LinearHeadNet(torch.nn.Module):
    """The full pretrained backbone with its classifier replaced by a new linear layer."""

    def __init__(self, n_classes: int, backbone: str = "efficientnet_lite0"):
        super().__init__()
        self.model = load_backbone(backbone, "DEFAULT").model
        self.model.reset_classifier(n_classes)

    def forward(self, x):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda):
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()


def network_inputs(X, args) -> torch.Tensor:
    """Images resized and normalised exactly as the featurizers feed the backbone.

    Kept on the training device, so that fine-tuning epochs are not input-bound.
    """
    spec_mean, spec_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # Lite0's own normalisation
    images = check_images(X)
    size = (args.image_size, args.image_size)
    device = resolve_device(args.device)
    return torch.cat(
        [
            preprocess_batch(
                images[s : s + 256], image_size=size, mean=spec_mean, std=spec_std, device=device
            ).contiguous()
            for s in range(0, len(images), 256)
        ]
    )


def fine_tune(inputs, y, train, test, n_classes, seed, args) -> dict:
    from skorch import NeuralNetClassifier
    from skorch.callbacks import EarlyStopping
    from skorch.dataset import ValidSplit

    weight = compute_class_weight("balanced", classes=np.arange(n_classes), y=y[train])
    torch.manual_seed(seed)
    net = NeuralNetClassifier(
        LinearHeadNet,
        module__n_classes=n_classes,
        criterion=torch.nn.CrossEntropyLoss,
        criterion__weight=torch.tensor(weight, dtype=torch.float32),
        optimizer=torch.optim.AdamW,
        lr=args.ft_lr,
        max_epochs=1 if args.quick else args.ft_epochs,
        batch_size=64,
        iterator_train__shuffle=True,
        train_split=ValidSplit(0.15, stratified=True, random_state=seed),
        callbacks=[EarlyStopping(patience=3, load_best=True)],
        device=str(resolve_device(args.device)),
        verbose=0,
    )
    net.fit(inputs[torch.as_tensor(train, device=inputs.device)], y[train])
    proba = net.predict_proba(inputs[torch.as_tensor(test, device=inputs.device)])
    return scores(y[test], proba.argmax(1), proba, n_classes)


# --------------------------------------------------------------------- ablation
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


def ablation_maps(data, args) -> tuple[dict, dict]:
    """Raw maps of the ablation layers (float16) and avg / max pooled maps of all layers."""
    layers = available_layers("efficientnet_lite0")
    device = resolve_device(args.device)
    feat = BackboneFeaturizer(layer=layers, image_size=args.image_size, device=args.device)
    feat.fit(data["X"][:2])
    images = check_images(data["X"])
    maps = {name: [] for name in ABLATION_LAYERS}
    pooled = {name: [] for name in layers}
    size = (args.image_size, args.image_size)
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


def standardise(maps: torch.Tensor, fit_index) -> np.ndarray:
    """Per-channel standardisation with training statistics, as the featurizer does."""
    train = maps[fit_index].double()
    mean = train.mean(dim=(0, 2, 3), keepdim=True)
    var = train.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    # Dead channels keep unit scale, as in CAETransferFeaturizer.
    std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
    return ((maps.double() - mean) / std).half().numpy()


def train_codes(maps: np.ndarray, fit_index, seed: int, args, params: dict) -> torch.Tensor:
    """Train one CAE through the featurizer's own skorch set-up; return all code maps."""
    params = dict(params)
    if args.quick:
        params["max_epochs"] = 2
    feat = CAETransferFeaturizer(device=args.device, random_state=seed, **params)
    device = resolve_device(args.device)
    net = feat._train_cae(MapViews(maps[fit_index]), seed, device)
    with torch.inference_mode():
        codes = [
            net.module_.encode(torch.from_numpy(maps[s : s + 512]).to(device)).cpu()
            for s in range(0, len(maps), 512)
        ]
    return torch.cat(codes)


def ablation_data(name: str, args):
    """A data set and the ablation's (train, test) indices.

    COVID-19 is cross-validated over all images (the CAE sees them without labels);
    PneumoniaMNIST's training split is subsampled to 2,000 images to fit the budget.
    """
    data = load_dataset(name, args)
    train, test = data["splits"][0]
    if name == "covid19_xray":
        train, test = np.arange(len(data["y"])), None
    elif name == "pneumoniamnist" and not args.quick:
        train = np.sort(np.random.default_rng(0).choice(train, 2000, replace=False))
    return data, train, test


def ablation(args) -> dict:
    results = {}
    for name in args.datasets:
        start = time.perf_counter()
        data, train, test = ablation_data(name, args)
        maps, pooled = ablation_maps(data, args)
        print(f"[ablation] {name}: maps {time.perf_counter() - start:.0f}s", flush=True)
        bb = {f"backbone {k} avg": v[:, : v.shape[1] // 2] for k, v in pooled.items()}
        features = {**{f"backbone {k} avgmax": v for k, v in pooled.items()}, **bb}
        features["backbone blocks.3-6+head avg"] = np.hstack(
            [bb[f"backbone {k} avg"] for k in ABLATION_LAYERS[1:]]
        )
        for seed in range(args.seeds):
            standard = {k: standardise(v, train) for k, v in maps.items()}
            codes = {}
            for cae_name, layer, params in ABLATION_CAES:
                code = train_codes(standard[layer], train, seed, args, params)
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

        results[name] = summarise_ablation(features, data, train, test)
        results[name]["_seconds"] = time.perf_counter() - start
        print(f"[ablation] {name}: done {time.perf_counter() - start:.0f}s", flush=True)
        write_json(results, Path(args.out) / "accuracy.ablation.json")
    return results


def summarise_ablation(features: dict, data, train, test) -> dict:
    """CV (and test) balanced accuracy of each feature set, mean over its seeds.

    Keys ``"<name> | seed <k>"`` are grouped by ``<name>``; feature sets with
    non-finite values are reported and dropped.
    """
    from joblib import Parallel, delayed

    y, k = data["y"], data["n_classes"]

    def evaluate(F):
        cv = StratifiedKFold(5, shuffle=True, random_state=0)
        out = {
            "cv_bacc": cross_val_score(
                svc(), F[train], y[train], cv=cv, scoring="balanced_accuracy"
            ).mean()
        }
        if test is not None:
            out.update(eval_features(F[train], y[train], F[test], y[test], k))
        return out

    bad = [key for key, F in features.items() if not np.isfinite(F).all()]
    if bad:
        print(f"[ablation] non-finite features (dropped): {bad}", flush=True)
    keys = [key for key in features if key not in bad]
    evaluated = Parallel(n_jobs=N_JOBS)(delayed(evaluate)(features[key]) for key in keys)
    rows: dict[str, list] = {}
    for key, out in zip(keys, evaluated, strict=True):
        rows.setdefault(key.split(" | seed")[0], []).append(out)
    return {
        key: {m: float(np.mean([r[m] for r in runs])) for m in runs[0]}
        | {"cv_bacc_std": float(np.std([r["cv_bacc"] for r in runs])), "n_seeds": len(runs)}
        for key, runs in rows.items()
    }


def blocks4_ablation(args, label: str, filename: str, seed_features) -> dict:
    """Run one blocks.4 ablation set on every data set and write ``filename``.

    ``seed_features(standard, bb, train, seed)`` returns ``{name: features}`` for one
    seed, from the standardised blocks.4 maps and their avg+max pooled backbone vector.
    """
    results = {}
    for name in args.datasets:
        start = time.perf_counter()
        data, train, test = ablation_data(name, args)
        maps, pooled = ablation_maps(data, args)
        bb = pooled["blocks.4"]
        standard = standardise(maps["blocks.4"], train)
        features = {"backbone blocks.4 avg": bb[:, : bb.shape[1] // 2]}
        for seed in range(args.seeds):
            for key, value in seed_features(standard, bb, train, seed).items():
                features[f"{key} | seed {seed}"] = value
        results[name] = summarise_ablation(features, data, train, test)
        results[name]["_seconds"] = time.perf_counter() - start
        print(f"[{label}] {name}: {time.perf_counter() - start:.0f}s", flush=True)
        write_json(results, Path(args.out) / filename)
    return results


def ablation_final(args) -> dict:
    """The chosen defaults against their nearest alternatives (same maps, same seeds)."""

    def seed_features(standard, bb, train, seed):
        avg_bb, features = bb[:, : bb.shape[1] // 2], {}
        for bneck in (64, 128):
            params = {**ABLATION_BASE, "bottleneck": bneck}
            code = train_codes(standard, train, seed, args, params).float()
            avg, avgmax = pool(code, "avg").numpy(), pool(code, "avgmax").numpy()
            tag = f"bottleneck={bneck}"
            features[f"code avg + backbone avg, {tag}"] = np.hstack([avg, avg_bb])
            features[f"code avgmax + backbone avg, {tag}"] = np.hstack([avgmax, avg_bb])
            features[f"code avgmax + backbone avgmax, {tag}"] = np.hstack([avgmax, bb])
        return features

    return blocks4_ablation(args, "final ablation", "accuracy.ablation_final.json", seed_features)


# Code width and sparsity of the blocks.4 CAE (all other parameters at their defaults).
SPARSE_CAES = {
    "bottleneck=64": {"bottleneck": 64, "sparsity": 0.0},
    "bottleneck=256": {"bottleneck": 256, "sparsity": 0.0},
    "bottleneck=256 sparsity=0.1": {"bottleneck": 256, "sparsity": 0.1},
}


def ablation_sparse(args) -> dict:
    """Wide sparse codes against the dense 64-channel code, alone and with the backbone."""

    def seed_features(standard, bb, train, seed):
        avg_bb, features = bb[:, : bb.shape[1] // 2], {}
        for key, params in SPARSE_CAES.items():
            codes = train_codes(standard, train, seed, args, params).float()
            active = float((codes > 0).float().mean())
            print(f"[sparse ablation] {key} seed {seed}: active {active:.2f}", flush=True)
            code = pool(codes, "avg").numpy()
            features[f"code {key}"] = code
            features[f"code {key} + backbone blocks.4 avg"] = np.hstack([code, avg_bb])
        return features

    return blocks4_ablation(args, "sparse ablation", "accuracy.ablation_sparse.json", seed_features)


# -------------------------------------------------------------------- benchmark
def timed(fn, *a, **k):
    start = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - start


def benchmark_dataset(name: str, args, log) -> list[dict]:
    data = load_dataset(name, args)
    X, y, k = data["X"], data["y"], data["n_classes"]
    seeds = range(args.seeds)
    rows = []
    full_label_runs = {}  # results at 100% labels, reused by the label-efficiency curve

    def add(method, runs, seconds, **extra):
        row = {"dataset": name, "method": method, **summarise(runs), "seconds": seconds, **extra}
        rows.append(row)
        log(row)

    if "raw" in args.parts:
        runs, seconds = timed(lambda: [raw_pixels(data, s, args) for s in data["splits"]])
        add("raw pixels + PCA(50)", runs, seconds)

    per_layer, bb_seconds = backbone_features(data, args)
    if "backbone" in args.parts:
        for layer, F in per_layer.items():
            runs = [eval_features(F[tr], y[tr], F[te], y[te], k) for tr, te in data["splits"]]
            add(f"BackboneFeaturizer layer={layer}", runs, bb_seconds)
        start = time.perf_counter()
        runs, chosen = [], []
        for tr, te in data["splits"]:
            chosen.append(select_layer(per_layer, tr, y))
            F = per_layer[chosen[-1]]
            runs.append(eval_features(F[tr], y[tr], F[te], y[te], k))
        full_label_runs["backbone"] = chosen[0]
        add(
            "BackboneFeaturizer, layer by inner CV",
            runs,
            bb_seconds + time.perf_counter() - start,
            layers=chosen,
        )

    cae_by_seed = {}
    if "cae" in args.parts:
        start = time.perf_counter()
        runs = []
        for seed in seeds:
            for tr, te in data["splits"]:
                # = Pipeline(featurizer, scaler, SVC).fit(X[tr], y[tr]) scored on X[te]
                F = cae_features(data, tr, seed, args)
                runs.append(eval_features(F[tr], y[tr], F[te], y[te], k))
                cae_by_seed[seed] = F  # reused by the label-efficiency curve (MedMNIST)
        add("CAETransferFeaturizer (defaults)", runs, (time.perf_counter() - start) / len(runs))

    if "grid" in args.parts:
        import tempfile

        start = time.perf_counter()
        runs, best = [], []
        grid = {
            "caetransferfeaturizer__layer": ["blocks.4", "blocks.5"],
            "caetransferfeaturizer__bottleneck": [64, 256],
        }
        if args.quick:
            grid = {"caetransferfeaturizer__bottleneck": [8, 16]}
        for tr, te in data["splits"][: args.grid_splits]:
            # The backbone maps are computed once per layer and shared by every fit.
            with tempfile.TemporaryDirectory() as cache:
                search = GridSearchCV(
                    cae_pipeline(0, args, cache=cache),
                    grid,
                    cv=2 if args.quick else 3,
                    scoring="balanced_accuracy",
                    n_jobs=N_JOBS,
                ).fit(X[tr], y[tr])
                best.append({p.split("__")[1]: v for p, v in search.best_params_.items()})
                model = search.best_estimator_
                runs.append(scores(y[te], model.predict(X[te]), model.decision_function(X[te]), k))
        add(
            "CAETransferFeaturizer, GridSearchCV",
            runs,
            time.perf_counter() - start,
            best_params=best,
        )

    inputs = None
    if "finetune" in args.parts:
        inputs = network_inputs(X, args)
        start = time.perf_counter()
        runs = [
            fine_tune(inputs, y, tr, te, k, seed, args)
            for seed in range(args.ft_seeds or args.seeds)
            for tr, te in data["splits"]
        ]
        add("fine-tuning (linear head)", runs, (time.perf_counter() - start) / len(runs))

    if "labels" in args.parts and name in MEDMNIST:
        tr, te = data["splits"][0]
        fractions = (0.5, 1.0) if args.quick else FRACTIONS
        if inputs is None and "finetune" in args.label_methods:
            inputs = network_inputs(X, args)
        for seed in seeds:
            cae_F = None
            if "cae" in args.label_methods:
                cae_F = cae_by_seed.get(seed)
                cae_F = cae_features(data, tr, seed, args) if cae_F is None else cae_F
            for fraction in fractions:
                labelled = tr[subsample(y[tr], fraction, seed)]
                result = {}
                if cae_F is not None:
                    result["CAETransferFeaturizer"] = eval_features(
                        cae_F[labelled], y[labelled], cae_F[te], y[te], k
                    )
                if "backbone" in args.label_methods:
                    # All labels: the same (deterministic) choice as the main row's.
                    full = fraction == 1.0 and "backbone" in full_label_runs
                    layer = full_label_runs["backbone"] if full else None
                    F = per_layer[layer or select_layer(per_layer, labelled, y)]
                    result["BackboneFeaturizer (layer by CV)"] = eval_features(
                        F[labelled], y[labelled], F[te], y[te], k
                    )
                if "finetune" in args.label_methods:
                    if seed >= (args.ft_seeds or args.seeds):
                        pass
                    elif fraction == 1.0 and "fine-tuning" in full_label_runs:
                        result["fine-tuning"] = full_label_runs["fine-tuning"][seed]
                    else:
                        result["fine-tuning"] = fine_tune(inputs, y, labelled, te, k, seed, args)
                for method, res in result.items():
                    row = {
                        "dataset": name,
                        "method": method,
                        "fraction": fraction,
                        "seed": seed,
                        "n_labels": len(labelled),
                        **res,
                    }
                    rows.append({"label_efficiency": True, **row})
                    log(row)
    return rows


# ---------------------------------------------------------------------- reports
def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str))


def fmt(row, key):
    if key not in row:
        return ""
    std = row.get(f"{key}_std", 0.0)
    return f"{row[key]:.3f}" + (f" ± {std:.3f}" if row.get("n_runs", 1) > 1 else "")


def label_summary(rows) -> dict:
    curves: dict = {}
    for r in rows:
        if r.get("label_efficiency"):
            curves.setdefault((r["dataset"], r["method"], r["fraction"]), []).append(r)
    return {key: summarise(runs) for key, runs in curves.items()}


def goal_summary(rows, datasets) -> list[str]:
    """Markdown lines: the CAE defaults against the issue's baselines, per data set."""
    main = {(r["dataset"], r["method"]): r for r in rows if not r.get("label_efficiency")}
    lines = [
        "## Against the goals",
        "",
        "Balanced accuracy of the CAE defaults minus that of BackboneFeaturizer with its "
        "layer chosen by inner CV (the fair baseline) and minus the best single layer picked "
        "on the test data (oracle); accuracy against the published ResNet-18 (28).",
        "",
        "| data set | CAE defaults | vs layer by inner CV | vs oracle layer | "
        "accuracy vs ResNet-18 (28) |",
        "|---|---|---|---|---|",
    ]
    differences = []
    for name in datasets:
        cae = main.get((name, "CAETransferFeaturizer (defaults)"))
        chosen = main.get((name, "BackboneFeaturizer, layer by inner CV"))
        layers = [
            r
            for (d, m), r in main.items()
            if d == name and m.startswith("BackboneFeaturizer layer=")
        ]
        if cae is None or chosen is None or not layers:
            continue
        oracle = max(layers, key=lambda r: r["bacc"])
        differences.append(cae["bacc"] - chosen["bacc"])
        published = PUBLISHED["ResNet-18 (28)"].get(name)
        versus = f"{cae['acc']:.3f} vs {published[0]:.3f}" if published else ""
        lines.append(
            f"| {name} | {fmt(cae, 'bacc')} | {100 * differences[-1]:+.1f} points | "
            f"{100 * (cae['bacc'] - oracle['bacc']):+.1f} ({oracle['method'].split('=')[1]}) | "
            f"{versus} |"
        )
    if differences:
        lines += [
            "",
            f"Mean difference to the layer chosen by inner CV: "
            f"{100 * np.mean(differences):+.1f} points (goal: +2).",
            "",
        ]
    return lines


def write_markdown(rows, meta, path: Path) -> None:
    lines = [
        "# Accuracy benchmark",
        "",
        f"Generated by `python benchmarks/accuracy.py {meta['argv']}` on {meta['device']} "
        f"({meta['date']}). Classifier: StandardScaler + SVC(class_weight='balanced'); "
        f"image size {meta['image_size']}; stochastic methods: mean ± std over "
        f"{meta['seeds']} seeds x splits. MedMNIST: official train -> test; COVID-19: "
        "5-fold stratified CV. seconds: wall time per fit + evaluation.",
        "",
        *[f"- {note}" for note in meta.get("notes", [])],
        *[
            f"- run: `python benchmarks/accuracy.py {r['argv']}` on {r['device']} ({r['date']})"
            for r in meta.get("runs", [])
        ],
        "",
    ]
    for name in meta["datasets"]:
        lines += [
            f"## {name}",
            "",
            "| method | accuracy | balanced acc. | ROC AUC | seconds |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            if r["dataset"] == name and not r.get("label_efficiency"):
                extra = f" ({', '.join(r['layers'])})" if "layers" in r else ""
                lines.append(
                    f"| {r['method']}{extra} | {fmt(r, 'acc')} | {fmt(r, 'bacc')} | "
                    f"{fmt(r, 'auc')} | {r['seconds']:.1f} |"
                )
        for model, numbers in PUBLISHED.items():
            if name in numbers:
                acc, auc = numbers[name]
                lines.append(f"| MedMNIST v2 {model}, published | {acc:.3f} | | {auc:.3f} | |")
        lines.append("")
    lines += goal_summary(rows, meta["datasets"])
    curves = label_summary(rows)
    if curves:
        lines += [
            "## Label efficiency (balanced accuracy on the test split)",
            "",
            "CAE fitted on all training images without labels; classifiers (and the "
            "fine-tuned network) see only the labelled fraction.",
            "",
            "| data set | method | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " |",
            "|---|---|" + "---|" * len(FRACTIONS),
        ]
        for dataset, method in dict.fromkeys((d, m) for d, m, _ in curves):
            cells = [
                fmt(curves[(dataset, method, f)], "bacc") if (dataset, method, f) in curves else ""
                for f in FRACTIONS
            ]
            lines.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines))


def plot_label_efficiency(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = label_summary(rows)
    datasets = list(dict.fromkeys(d for d, _, _ in curves))
    methods = sorted({m for _, m, _ in curves})
    colors = {m: f"C{i}" for i, m in enumerate(methods)}  # same colour in every panel
    if not datasets:
        return
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=False):
        for method in dict.fromkeys(m for d, m, _ in curves if d == dataset):
            points = sorted(
                (f, s) for (d, m, f), s in curves.items() if d == dataset and m == method
            )
            x = [100 * f for f, _ in points]
            mean = np.array([s["bacc"] for _, s in points])
            std = np.array([s["bacc_std"] for _, s in points])
            ax.errorbar(
                x, mean, yerr=std, marker="o", capsize=3, label=method, color=colors[method]
            )
        ax.set(
            xscale="log", xlabel="% of training labels", ylabel="balanced accuracy", title=dataset
        )
        ax.set_xticks([5, 10, 25, 100], ["5", "10", "25", "100"])
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[m], marker="o", label=m) for m in methods]
    axes[0][0].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke subset")
    parser.add_argument("--datasets", nargs="+", default=None, choices=DATASETS)
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["raw", "backbone", "cae", "grid", "finetune", "labels"],
        choices=["raw", "backbone", "cae", "grid", "finetune", "labels", "ablation"],
    )
    parser.add_argument("--label-methods", nargs="+", default=["cae", "backbone", "finetune"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--ft-epochs", type=int, default=15)
    parser.add_argument("--ft-seeds", type=int, default=None, help="seeds of fine-tuning runs")
    parser.add_argument("--grid-splits", type=int, default=1, help="CV folds searched (COVID)")
    parser.add_argument("--report-only", action="store_true", help="rewrite md/png from json")
    parser.add_argument("--ablation-set", default="full", choices=["full", "final", "sparse"])
    parser.add_argument("--ft-lr", type=float, default=3e-4)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--medmnist-root", default=os.environ.get("MEDMNIST_ROOT", SHARED / "medmnist")
    )
    parser.add_argument(
        "--covid-root", default=os.environ.get("COVID_ROOT", SHARED / "covid19_xray")
    )
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--merge", action="store_true", help="keep rows of accuracy.json for parts not run now"
    )
    args = parser.parse_args(argv)
    if args.quick:
        global N_JOBS
        N_JOBS = 1
        args.datasets = args.datasets or ["breastmnist"]
        args.seeds, args.image_size = 1, 32
    args.datasets = args.datasets or list(DATASETS)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if "ablation" in args.parts:
        {"full": ablation, "final": ablation_final, "sparse": ablation_sparse}[args.ablation_set](
            args
        )
        return []
    meta = {
        "argv": " ".join(sys.argv[1:]) if argv is None else " ".join(argv),
        "device": torch.cuda.get_device_name()
        if resolve_device(args.device).type == "cuda"
        else f"CPU ({os.cpu_count()} cores)",
        "date": time.strftime("%Y-%m-%d"),
        "image_size": args.image_size,
        "seeds": args.seeds,
        "datasets": args.datasets,
        "parts": args.parts,
    }
    rows = []
    if args.report_only:
        saved = json.loads((out / "accuracy.json").read_text())
        write_markdown(saved["rows"], saved["meta"], out / "accuracy.md")
        plot_label_efficiency(saved["rows"], out / "accuracy.png")
        return saved["rows"]
    run = {k: meta[k] for k in ("argv", "device", "date")}
    meta["runs"] = [run]
    if args.merge and (out / "accuracy.json").exists():
        old = json.loads((out / "accuracy.json").read_text())
        rows = [r for r in old["rows"] if not _produced_now(r, args)]
        meta["datasets"] = list(dict.fromkeys([*old["meta"]["datasets"], *args.datasets]))
        # Keep the record of the runs that produced the rows kept.
        meta["notes"] = old["meta"].get("notes", [])
        meta["runs"] = [*old["meta"].get("runs", []), run]
        meta["argv"], meta["device"] = "(merged runs, see below)", "several machines"

    def log(row):
        print(
            json.dumps({k: v for k, v in row.items() if not isinstance(v, list)}, default=str),
            flush=True,
        )

    start = time.perf_counter()
    for name in args.datasets:
        rows += [{**row, "where": run["device"]} for row in benchmark_dataset(name, args, log)]
        meta["seconds"] = time.perf_counter() - start
        write_json({"meta": meta, "rows": rows}, out / "accuracy.json")
    write_markdown(rows, meta, out / "accuracy.md")
    plot_label_efficiency(rows, out / "accuracy.png")
    return rows


_PART_OF = {
    "raw pixels": "raw",
    "BackboneFeaturizer": "backbone",
    "CAETransferFeaturizer (": "cae",
    "CAETransferFeaturizer,": "grid",
    "fine-tuning (": "finetune",
}


def _produced_now(row, args) -> bool:
    if row["dataset"] not in args.datasets:
        return False
    if row.get("label_efficiency"):
        return "labels" in args.parts and any(
            row["method"].lower().startswith(m[:4]) for m in args.label_methods
        )
    part = next((p for prefix, p in _PART_OF.items() if row["method"].startswith(prefix)), None)
    return part in args.parts


if __name__ == "__main__":
    main()
