"""Benchmark (not a test): all pairs within a Hamming radius among 1,000,000 64-bit pHashes.

    /work/venv/bin/python tests/benchmarks/bench_dedupe.py [--n 1000000] [--radius 6] [--compare]
    [--stage]

The hashes imitate real face-crop pHashes: bits are biased the way aligned faces bias them (the DC
bit always set, the others drawn with a Beta(2, 2) probability: ~55 bits of entropy, measured ~54 on
LFW faces), videos of 32 frames that scatter around a base hash (consecutive sampled frames sit at
a median of ~12 bits, as measured on the carphone clip), 5% of the videos re-encoded into a second
"source" (a few bits flipped per frame) and 1% copied byte for byte, and 40% unrelated single crops.
`--compare` also times faiss's IndexBinaryFlat and IndexBinaryMultiHash on a 100k subset and
extrapolates (both are quadratic or probe-bound); `--stage` times the dedupe stage's clustering of
1M crops (pairs + cross-video evidence + union) on top of the search.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mesodata.pipeline import phash


def realistic_hashes(n: int, seed: int = 0, frames: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """n uint64 hashes and the video index of each (unrelated crops get a video of their own)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, 64)
    p[0] = 1.0  # DC bit (most significant): always above the median
    weights = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)

    def draw(k: int) -> np.ndarray:
        bits = rng.random((k, 64)) < p
        return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)

    def flips(k: int, lam: float) -> np.ndarray:
        counts = np.minimum(rng.poisson(lam, k), 63)
        out = np.zeros(k, np.uint64)
        for c in np.unique(counts):
            if c == 0:
                continue
            rows = np.flatnonzero(counts == c)
            pos = np.argsort(rng.random((len(rows), 63)), axis=1)[:, :c].astype(np.uint64)  # never the DC bit
            out[rows] = np.bitwise_or.reduce(np.uint64(1) << pos, axis=1)
        return out

    n_video_rows = int(n * 0.6) // frames * frames
    n_videos = n_video_rows // frames
    n_reenc, n_exact = int(n_videos * 0.05), int(n_videos * 0.01)
    n_orig = n_videos - n_reenc - n_exact
    base = draw(n_orig)
    orig = np.repeat(base, frames) ^ flips(n_orig * frames, 6.0)  # frames around the video's base
    src = rng.integers(0, n_orig, n_reenc + n_exact)
    copies = orig.reshape(n_orig, frames)[src].reshape(-1)
    copies[: n_reenc * frames] ^= flips(n_reenc * frames, 2.0)  # re-encoded at another quality
    video_rows = np.concatenate([orig, copies])
    singles = draw(n - len(video_rows))
    hashes = np.concatenate([video_rows, singles])
    video = np.concatenate([np.repeat(np.arange(n_videos), frames),
                            n_videos + np.arange(len(singles))])
    return hashes, video


def timed(label: str, fn):
    """Run fn; print wall and CPU seconds (CPU/2 is the wall time an idle 2-core machine would see)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    print(f"{label:<58} {dt:8.2f} s wall {dc:8.2f} s CPU")
    return out, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--radius", type=int, default=phash.DEFAULT_RADIUS)
    ap.add_argument("--compare", action="store_true", help="also time flat / multihash on 100k")
    ap.add_argument("--stage", action="store_true", help="also time the stage's clustering")
    args = ap.parse_args()
    import faiss

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, n={args.n:,}, radius={args.radius}")
    (hashes, video), _ = timed("generate realistic hashes", lambda: realistic_hashes(args.n))
    (uniq, inverse), _ = timed("distinct hashes (np.unique)", lambda: np.unique(hashes, return_inverse=True))
    (i, j, d), dt = timed(f"pairs within {args.radius} among {len(uniq):,} distinct (buckets)",
                          lambda: phash.neighbours(uniq, args.radius, method="buckets"))
    same = np.bincount(np.bincount(inverse.reshape(-1)))  # rows sharing a hash add distance-0 pairs
    zero_pairs = int(sum(k * (k - 1) // 2 * c for k, c in enumerate(same)))
    print(f"  -> {len(i):,} pairs of distinct hashes + {zero_pairs:,} pairs of identical hashes; "
          f"distance histogram {np.bincount(d, minlength=args.radius + 1).tolist()}")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores (other processes share the CPUs when > cores)")
    print(f"RESULT all pairs within radius {args.radius} among {args.n:,} hashes: {dt:.1f} s "
          f"({'under' if dt < 60 else 'OVER'} the 60 s budget)")
    if args.compare:
        sub = uniq[np.random.default_rng(1).choice(len(uniq), 100_000, replace=False)]
        for method in ("buckets", "flat", "multihash"):
            (ri, _, _), t = timed(f"  100k subset, {method}", lambda: phash.neighbours(sub, args.radius, method=method))
            print(f"    {len(ri):,} pairs; x100 if quadratic -> ~{t * 100:.0f} s at 1M")
    if args.stage:
        from mesodata.pipeline.stages.dedupe import cluster

        hs = phash.to_signed(hashes)
        timed("stage clustering of all rows (pairs, evidence, union)",
              lambda: cluster(video.astype(np.int64), hs, None, args.radius))


if __name__ == "__main__":
    main()
