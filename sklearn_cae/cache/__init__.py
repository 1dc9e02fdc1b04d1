"""On-disk cache of backbone feature maps, for a few images or a few hundred thousand.

The frozen backbone's forward pass dominates the cost of both featurizers, and it is the
same for every CV fold and grid point that shares a backbone, layer(s), image size and
preprocessing, and for every run over the same collection. :class:`FeatureCache` stores
each image's tapped maps once, so that folds, CAE settings and interrupted runs reuse
each other's work.

Layout::

    <location>/sklearn_cae_features/shards-v2/index.sqlite       key -> (shard, offset)
    <location>/sklearn_cae_features/shards-v2/shards/*.shard     append-only records
    <location>/sklearn_cae_features/tmp/                         unlinked training maps

* The model digest hashes everything that changes the maps: the truncated backbone's
  architecture and weights, the tapped layers, ``image_size``, ``intensity``, the input
  normalisation, the numeric precision (CUDA autocast or not), this package's version
  and the store's format. Another release or backbone setting never reads these entries.
* An image file's key hashes its resolved path, size and modification time, read with
  one ``stat`` (no decoding: a warm cache never opens the images); an in-memory image's
  key hashes its content (bytes, shape and dtype). ``FeatureCache(..., key="content")``
  keys files on their decoded pixels instead.
* A record is the float16 maps of all tapped layers after a header (model, key, sizes)
  and a CRC32 of both, appended to a shard that only its writing process appends to;
  the index row is written after the record. A record torn by SIGKILL or a power cut,
  truncated or bit-flipped on disk fails its check and is recomputed, never read. The
  index is rebuilt from the shards when it is missing or damaged.
* ``max_size`` caps the cache: past it, the least recently used entries are evicted and
  their shards compacted. :meth:`FeatureCache.info` and :meth:`FeatureCache.prune` are
  what ``sklearn-cae cache info|prune`` run.
* The cache only saves work: an entry that cannot be written (full disk, file-size
  limit, read-only folder) is skipped with a :class:`CacheWriteWarning`, and the CAE's
  training maps go to the system's temporary folder, or to memory, when the cache
  folder cannot hold them.
"""

from ._cache import (
    CacheInfo,
    CacheWriteWarning,
    FeatureCache,
    check_cache,
    parse_size,
    temporary_array,
)
from ._keys import file_digests, image_digests, model_digest

__all__ = [
    "CacheInfo",
    "CacheWriteWarning",
    "FeatureCache",
    "check_cache",
    "file_digests",
    "image_digests",
    "model_digest",
    "parse_size",
    "temporary_array",
]
