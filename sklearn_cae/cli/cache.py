"""``sklearn-cae cache info|prune``: what a feature cache folder holds, and shrinking it."""

from __future__ import annotations

import argparse

from ._console import CLIError
from ._options import size

NAME = "cache"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME,
        help="show or shrink a feature cache folder (--cache DIR)",
        description="A feature cache (the folder given to --cache) keeps each image's "
        "backbone maps in a few large shard files with an index; see docs/caching.rst.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser(
        "info",
        help="entries, size on disk, and how much prune can reclaim",
        description="Print the cache's entries (images' maps), backbone settings, shards "
        "and size on disk, with the part that evicted or replaced entries still take.",
    )
    info.add_argument("dir", metavar="DIR", help="the cache folder (as given to --cache)")
    prune = actions.add_parser(
        "prune",
        help="evict least recently used entries down to --max-size",
        description="Evict the least recently used entries until the cache holds at most "
        "--max-size, compact its shards, and remove files of the older per-image format. "
        "Safe while other runs use the cache: shards they are writing are left for later.",
    )
    prune.add_argument("dir", metavar="DIR", help="the cache folder (as given to --cache)")
    prune.add_argument(
        "--max-size",
        required=True,
        type=size,
        metavar="SIZE",
        help="what the cache may keep, e.g. 500M or 20G (binary units: 1K = 1024 bytes)",
    )


def run(args: argparse.Namespace) -> None:
    from ..cache import FeatureCache

    cache = FeatureCache(args.dir)
    # Opening a store creates it: a mistyped folder must not become an empty cache.
    if not cache.root.is_dir():
        raise CLIError(f"{args.dir} is not a feature cache (no {cache.root.name} folder in it)")
    if args.action == "info":
        print(cache.info())
        return
    before = cache.info().size
    evicted = cache.prune(args.max_size)
    after = cache.info().size
    print(
        f"evicted {evicted:,} entries; {_mib(before)} -> {_mib(after)} "
        f"(max size {_mib(args.max_size)})"
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"
