"""Image fingerprints for dedupe: an exact hash of decoded pixels and a 64-bit DCT perceptual hash.

pHash (Zauner 2010; the `imagehash.phash` variant): grey levels, area-resized to 32x32, 2-D DCT-II,
the 8x8 lowest frequencies (DC included), one bit per coefficient: 1 where it exceeds their median.
Bit k of the hash (k = 8*row + col, most significant first) is coefficient (row, col). OpenCV's
`cv2.img_hash` is a contrib module absent from the headless wheels, so the DCT is done here: a batch
is two matrix products with the orthonormal DCT basis, the same numbers as `cv2.dct`.

Near-duplicates are hashes at Hamming distance <= a radius; `pairs_within` finds all of them with a
faiss multi-index hash (pigeonhole: split 64 bits into m chunks, two hashes within r differ in at
most floor(r / m) bits of some chunk, so probing each chunk's buckets within that many flips is
exact), falling back to a flat scan for tiny inputs.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import cv2
import numpy as np

__all__ = [
    "pixel_hash", "phash", "phash_gray", "hamming", "neighbours", "pairs_within", "to_signed",
    "to_unsigned", "chunk_plan",
    "DEFAULT_RADIUS",
]

HASH_SIZE = 8
IMG_SIZE = 32
# Chosen on real footage (see tests/test_dedupe.py::test_radius_separates_reencodes_from_unrelated
# and the dedupe stage's docstring): re-encodes of one frame sit at 0-4, unrelated crops at >= 14.
DEFAULT_RADIUS = 6


def _dct_basis(n: int = IMG_SIZE) -> np.ndarray:
    """The orthonormal DCT-II matrix (rows: frequencies), as cv2.dct uses."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_BASIS = _dct_basis()[:HASH_SIZE].astype(np.float64)  # only the 8 lowest frequencies are needed
_WEIGHTS = (np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64))


def pixel_hash(rgb: np.ndarray) -> str:
    """Exact identity of decoded pixels (shape included): BLAKE2b-128, hex."""
    a = np.ascontiguousarray(rgb)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _small_gray(rgb: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    return cv2.resize(gray, (IMG_SIZE, IMG_SIZE), interpolation=cv2.INTER_AREA)


def phash_gray(small: np.ndarray) -> np.ndarray:
    """pHash of a batch of 32x32 grey images (N, 32, 32) -> uint64 (N,)."""
    x = np.asarray(small, np.float64).reshape(-1, IMG_SIZE, IMG_SIZE)
    low = (_BASIS @ x @ _BASIS.T).reshape(len(x), HASH_SIZE * HASH_SIZE)
    bits = low > np.median(low, axis=1, keepdims=True)
    return (bits.astype(np.uint64) * _WEIGHTS).sum(axis=1, dtype=np.uint64)


def phash(images: np.ndarray | Sequence[np.ndarray] | Iterable[np.ndarray]) -> np.ndarray:
    """pHash of one RGB/grey image (-> uint64 scalar array of shape ()) or of a batch (-> (N,) uint64)."""
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (1, 3, 4)):
        if images.ndim == 3 and images.shape[-1] == 4:
            images = images[..., :3]
        return phash_gray(_small_gray(np.ascontiguousarray(images))[None])[0]
    smalls = [_small_gray(np.ascontiguousarray(im[..., :3] if im.ndim == 3 else im)) for im in images]
    if not smalls:
        return np.zeros(0, np.uint64)
    return phash_gray(np.stack(smalls))


def to_signed(h: np.ndarray) -> np.ndarray:
    """uint64 hashes as int64 (same bits) for Arrow/Parquet columns."""
    return np.asarray(h, np.uint64).view(np.int64)


def to_unsigned(h: np.ndarray) -> np.ndarray:
    return np.asarray(h, np.int64).view(np.uint64)


def hamming(a, b) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcasting)."""
    x = np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
    return np.bitwise_count(x).astype(np.int64) if hasattr(np, "bitwise_count") else _popcount(x)


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    out = np.zeros(x.shape, np.int64)
    for _ in range(8):
        out += _BYTE_POP[(x & np.uint64(0xFF)).astype(np.int64)]
        x >>= np.uint64(8)
    return out


_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], np.int64)


def _codes(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> faiss binary codes (N, 8) uint8, big-endian so faiss bit order = ours."""
    return np.ascontiguousarray(np.asarray(h, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8))


def pairs_within(hashes: np.ndarray, radius: int, *, method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs i < j of `hashes` (uint64, duplicates allowed) at Hamming distance <= `radius`.

    Returns (i, j, distance) int64 arrays sorted by (i, j). Row pairs are expanded from the pairs
    of distinct hashes, so this is for moderate inputs; at scale use `neighbours` on distinct hashes.
    """
    hashes = np.asarray(hashes, np.uint64)
    uniq, inverse = np.unique(hashes, return_inverse=True)
    inverse = inverse.reshape(-1)
    ui, uj, ud = neighbours(uniq, radius, method=method)
    members = [[] for _ in range(len(uniq))]
    for row, u in enumerate(inverse.tolist()):
        members[u].append(row)
    out = []
    for m in members:  # rows sharing a hash
        out.extend((a, b, 0) for k, a in enumerate(m) for b in m[k + 1:])
    for a, b, d in zip(ui.tolist(), uj.tolist(), ud.tolist()):
        out.extend((min(x, y), max(x, y), d) for x in members[a] for y in members[b])
    if not out:
        e = np.zeros(0, np.int64)
        return e, e, e
    arr = np.array(sorted(out), np.int64)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def neighbours(hashes: np.ndarray, radius: int, *, method: str = "auto",
               threads: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All index pairs i < j of `hashes` (uint64) at Hamming distance <= `radius`, exactly.

    Returns (i, j, distance) int64 arrays, sorted by (i, j). Methods:
      - "buckets" (default at scale): pigeonhole over radius+1 disjoint bit chunks — two hashes within
        the radius agree exactly on at least one chunk — then a faiss `IndexBinaryFlat` range search
        inside each chunk's buckets; a pair is kept only in the first chunk it agrees on.
      - "flat": one `IndexBinaryFlat` range search over everything (quadratic; small inputs).
      - "multihash": faiss `IndexBinaryMultiHash` with enough flips to be exact (slow: see the benchmark).
    """
    import faiss

    if radius < 0:
        raise ValueError(f"radius must be >= 0; got {radius}")
    hashes = np.ascontiguousarray(hashes, np.uint64)
    n = len(hashes)
    empty = np.zeros(0, np.int64)
    if n < 2:
        return empty, empty, empty
    if threads:
        faiss.omp_set_num_threads(threads)
    if method == "auto":
        method = "flat" if n <= 20000 or radius >= 32 else "buckets"
    codes = _codes(hashes)
    if method == "flat":
        i, j, d = _range_search(faiss.IndexBinaryFlat(64), codes, radius)
    elif method == "multihash":
        nhash, bits, nflip = multihash_plan(radius)
        index = faiss.IndexBinaryMultiHash(64, nhash, bits)
        index.nflip = nflip
        i, j, d = _range_search(index, codes, radius)
    elif method == "buckets":
        i, j, d = _bucket_search(hashes, codes, radius, faiss)
    else:
        raise ValueError(f"method must be auto, flat, buckets or multihash; got {method!r}")
    o = np.lexsort((j, i))
    return i[o], j[o], d[o]


def _range_search(index, codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs q < k of `codes` within `radius` (faiss binary range search keeps d < threshold)."""
    index.add(codes)
    lims, dist, idx = index.range_search(codes, radius + 1)
    q = np.repeat(np.arange(len(codes), dtype=np.int64), np.diff(lims.astype(np.int64)))
    idx = idx.astype(np.int64)
    keep = idx > q
    return q[keep], idx[keep], dist[keep].astype(np.int64)


def _cross(a: np.ndarray, b: np.ndarray, radius: int, faiss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (x in a, y in b) within `radius`: indices into a and b."""
    index = faiss.IndexBinaryFlat(64)
    index.add(b)
    lims, dist, idx = index.range_search(a, radius + 1)
    q = np.repeat(np.arange(len(a), dtype=np.int64), np.diff(lims.astype(np.int64)))
    return q, idx.astype(np.int64), dist.astype(np.int64)


def _self_pairs(codes: np.ndarray, radius: int, faiss, leaf: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs q < k of `codes` within `radius`; halves big sets so only ~half the s^2 distances are computed."""
    n = len(codes)
    if n <= leaf:
        return _range_search(faiss.IndexBinaryFlat(64), codes, radius)
    h = n // 2
    ai, aj, ad = _self_pairs(codes[:h], radius, faiss, leaf)
    bi, bj, bd = _self_pairs(codes[h:], radius, faiss, leaf)
    ci, cj, cd = _cross(codes[:h], codes[h:], radius, faiss)
    return (np.concatenate([ai, bi + h, ci]), np.concatenate([aj, bj + h, cj + h]),
            np.concatenate([ad, bd, cd]))


def chunk_plan(radius: int, hashes: np.ndarray | None = None) -> list[np.ndarray]:
    """radius + 1 disjoint sets of bit positions (0 = least significant) covering all 64 bits.

    Pigeonhole needs the chunks disjoint, not contiguous: given `hashes`, bits are dealt so that each
    chunk carries about the same entropy (pHash bits of faces are biased: the DC bit never varies),
    which evens out bucket sizes and so the quadratic work inside them.
    """
    m = min(radius + 1, 64)
    base, extra = divmod(64, m)
    sizes = [base + (1 if c < extra else 0) for c in range(m)]
    if hashes is None or len(hashes) == 0:
        out, hi = [], 64
        for s in sizes:
            out.append(np.arange(hi - s, hi))
            hi -= s
        return out
    sample = np.asarray(hashes, np.uint64)[:: max(1, len(hashes) // 200_000)]
    p = np.array([((sample >> np.uint64(b)) & np.uint64(1)).mean() for b in range(64)])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nan_to_num(p * np.log2(p)) - np.nan_to_num((1 - p) * np.log2(1 - p))
    chunks: list[list[int]] = [[] for _ in range(m)]
    load = np.zeros(m)
    for b in np.argsort(-ent, kind="stable"):  # richest bits first, each to the poorest open chunk
        open_ = [c for c in range(m) if len(chunks[c]) < sizes[c]]
        c = min(open_, key=lambda c: (load[c], c))
        chunks[c].append(int(b))
        load[c] += ent[b]
    return [np.array(sorted(c)) for c in chunks]


def _chunk_key(hashes: np.ndarray, bits: np.ndarray) -> np.ndarray:
    key = np.zeros(len(hashes), np.uint64)
    for k, b in enumerate(bits):
        key |= ((hashes >> np.uint64(b)) & np.uint64(1)) << np.uint64(k)
    return key


SMALL_BUCKET = 48


def _small_bucket_pairs(order: np.ndarray, sorted_keys: np.ndarray, in_small: np.ndarray,
                        max_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of rows sharing a key, for the keys whose run in `sorted_keys` is marked small."""
    out_i, out_j = [], []
    n = len(sorted_keys)
    for k in range(1, max_size):
        p = np.flatnonzero(in_small[:n - k] & (sorted_keys[:n - k] == sorted_keys[k:]))
        if not len(p):
            break
        out_i.append(order[p]); out_j.append(order[p + k])
    if not out_i:
        e = np.zeros(0, np.int64)
        return e, e
    return np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)


def _bucket_search(hashes: np.ndarray, codes: np.ndarray, radius: int, faiss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    plan = chunk_plan(radius, hashes)
    masks = [np.bitwise_or.reduce(np.uint64(1) << bits.astype(np.uint64)) for bits in plan]
    out_i, out_j, out_d = [], [], []
    for c, bits in enumerate(plan):
        key = _chunk_key(hashes, bits)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        cuts = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(sk)]])
        sizes = ends - starts
        ci, cj, cd = [], [], []
        small = (sizes >= 2) & (sizes <= SMALL_BUCKET)
        if small.any():  # many small buckets: all their pairs at once in numpy (no per-bucket call)
            si, sj = _small_bucket_pairs(order, sk, np.repeat(small, sizes), int(sizes[small].max()))
            sd = hamming(hashes[si], hashes[sj])
            near = sd <= radius
            ci.append(si[near]); cj.append(sj[near]); cd.append(sd[near])
        threads = faiss.omp_get_max_threads()
        for b in np.flatnonzero(sizes > SMALL_BUCKET):
            members = order[starts[b]:ends[b]]
            # threads pay off on big buckets only; on small ones their start-up (and, on a busy
            # machine, their waiting for each other) costs more than the distances
            faiss.omp_set_num_threads(threads if len(members) >= 1024 else 1)
            try:
                qi, qj, qd = _self_pairs(codes[members], radius, faiss)
            finally:
                faiss.omp_set_num_threads(threads)
            if len(qi):
                ci.append(members[qi]); cj.append(members[qj]); cd.append(qd)
        if not ci:
            continue
        i = np.concatenate(ci); j = np.concatenate(cj); d = np.concatenate(cd)
        if c:  # keep a pair only in the first chunk where it agrees, so none is reported twice
            x = hashes[i] ^ hashes[j]
            seen = np.zeros(len(i), bool)
            for mask in masks[:c]:
                seen |= (x & mask) == 0
            i, j, d = i[~seen], j[~seen], d[~seen]
        out_i.append(np.minimum(i, j)); out_j.append(np.maximum(i, j)); out_d.append(d)
    if not out_i:
        e = np.zeros(0, np.int64)
        return e, e, e
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def multihash_plan(radius: int) -> tuple[int, int, int]:
    """(chunks, bits per chunk, flips per chunk) for an exact multi-hash search at `radius`.

    Each extra chunk shrinks the flips to probe (fewer buckets) but shortens the key (fuller
    buckets). The plan minimises candidates per query for uniform codes of a million-row index.
    """
    best = None
    for nhash in range(1, 65):
        bits = 64 // nhash
        if bits > 32 or bits < 4:
            continue
        nflip = radius // nhash
        if nflip > bits:
            continue
        from math import comb
        probes = nhash * sum(comb(bits, k) for k in range(nflip + 1))
        per_bucket = 1_000_000 / 2 ** bits
        cost = probes * (1.0 + per_bucket)  # a probe costs a lookup plus its bucket's scan
        if best is None or cost < best[0]:
            best = (cost, nhash, bits, nflip)
    if best is None:
        raise ValueError(f"no multi-hash plan for radius {radius}")
    return best[1], best[2], best[3]
