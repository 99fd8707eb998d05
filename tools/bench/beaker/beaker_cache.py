#!/usr/bin/env python3
"""Measure the cost of a cache *hit* in Python Beaker, for a side-by-side with carboy.

What it measures
----------------
For Beaker's ``memory``, ``dbm`` and ``file`` backends, each built with::

    beaker.cache.CacheManager(**beaker.util.parse_cache_config_options({
        "cache.type": <backend>, "cache.data_dir": <fresh temp dir>,
        "cache.expire": 3600}))

the script creates one cache namespace, stores N entries (key: 16 random bytes
as a 32-char hex string, since Beaker keys are strings; value: 100 random
bytes as ``bytes``) from a seeded RNG, and then times cache hits, in a seeded
random order over all N keys, two ways, each for at least ``--seconds``
(default 2) seconds:

* ``get``            -- ``cache.get(key)``
* ``get_or_create``  -- ``cache.get(key, createfunc=f)``; every call is a hit,
                        so ``f`` must never run (this is asserted).

It prints Python and Beaker versions, which dbm module Beaker's dbm backend
uses (Beaker picks ``dbm.gnu`` if importable, else ``dbm.dumb``), and a
markdown table: backend, mode, N, hits timed, hits/s, microseconds per hit.

Notes on method
---------------
* Beaker's ``file`` backend unpickles (and, on writes, re-pickles) the whole
  namespace on every access, so it gets a smaller N (``--file-n``, default
  2000).  The dbm backend re-opens the dbm on every access; with ``dbm.dumb``
  that re-parses the whole index, so a dbm hit costs O(N) (``--dbm-n``
  defaults to ``--n``).
* Loading is not timed.  The N entries are stored with ``cache.put`` while the
  namespace's write lock is held once around the whole load, so the dbm/file
  resource is opened and written back once instead of once per key (otherwise
  loading is O(N^2) for those backends).  The timed hits take no outer lock:
  they are plain ``cache.get`` calls, exactly as an application makes them.
* The clock (``time.perf_counter``) is read after every hit; that overhead
  (~0.1 us) is included in the per-hit figure.
* Results on a shared machine are noisy; only ratios within one run mean much.

How to run (from the repository root)
-------------------------------------
    pip install Beaker
    python3 tools/bench/beaker/beaker_cache.py [--n N] [--file-n N] [--dbm-n N]
                                               [--seconds S] [--seed SEED]
"""

import argparse
import dbm
import os
import platform
import random
import shutil
import sys
import tempfile
import time

import beaker
from beaker.cache import CacheManager
from beaker.util import parse_cache_config_options

KEY_BYTES = 16
VALUE_BYTES = 100
EXPIRE = 3600


def make_cache(backend, data_dir):
    """Build a Beaker cache namespace of the given backend in data_dir."""
    manager = CacheManager(
        **parse_cache_config_options(
            {
                "cache.type": backend,
                "cache.data_dir": data_dir,
                "cache.expire": EXPIRE,
            }
        )
    )
    return manager.get_cache("carboy_bench_" + backend)


def load(cache, n, rng):
    """Store n entries; return the list of keys and a dict key -> value."""
    keys = [rng.randbytes(KEY_BYTES).hex() for _ in range(n)]
    values = {k: rng.randbytes(VALUE_BYTES) for k in keys}
    if len(values) != n:
        raise SystemExit("duplicate random key; change --seed")
    ns = cache.namespace
    # One write lock around the whole load: the dbm / pickle file is opened
    # once and written back once (Beaker's lock is re-entrant, so each put's
    # own acquire/release nests inside this one).
    ns.acquire_write_lock()
    try:
        for k in keys:
            cache.put(k, values[k])
    finally:
        ns.release_write_lock()
    return keys, values


def time_hits(call, keys, order, seconds):
    """Call call(key) over keys in the given order (cycling) for >= seconds.

    Returns (hits, elapsed_seconds).
    """
    clock = time.perf_counter
    n = len(order)
    hits = 0
    i = 0
    start = clock()
    deadline = start + seconds
    while True:
        call(keys[order[i]])
        hits += 1
        i += 1
        if i == n:
            i = 0
        now = clock()
        if now >= deadline:
            return hits, now - start


def dbm_info(cache):
    """Describe which dbm implementation Beaker's dbm namespace uses."""
    ns = cache.namespace
    module = getattr(ns, "dbmmodule", None)
    handle = getattr(ns, "dbm", None)
    parts = []
    if module is not None:
        parts.append("namespace.dbmmodule = %s" % module.__name__)
    if handle is not None:
        parts.append(
            "namespace.dbm is %s.%s"
            % (type(handle).__module__, type(handle).__qualname__)
        )
    path = getattr(ns, "file", None)
    if path:
        parts.append("dbm.whichdb(file) = %r" % (dbm.whichdb(path),))
    return "; ".join(parts) if parts else "not reachable"


def bench_backend(backend, n, seconds, seed, rows, notes):
    data_dir = tempfile.mkdtemp(prefix="beaker_bench_%s_" % backend)
    try:
        rng = random.Random(seed)
        cache = make_cache(backend, data_dir)
        t0 = time.perf_counter()
        keys, values = load(cache, n, rng)
        load_s = time.perf_counter() - t0
        notes.append("%s: loaded N=%d in %.2f s (untimed setup)" % (backend, n, load_s))
        if backend == "dbm":
            notes.append("dbm module: " + dbm_info(cache))

        # Sanity: a few hits return the stored bytes.
        for k in rng.sample(keys, min(3, n)):
            got = cache.get(k)
            assert got == values[k], (backend, k)

        created = []

        def createfunc():
            created.append(1)
            return b"!" * VALUE_BYTES

        modes = [
            ("get", cache.get),
            ("get_or_create", lambda k: cache.get(k, createfunc=createfunc)),
        ]
        for mode, call in modes:
            order = list(range(n))
            rng.shuffle(order)
            hits, elapsed = time_hits(call, keys, order, seconds)
            rows.append((backend, mode, n, hits, hits / elapsed, elapsed / hits * 1e6))
        assert not created, "createfunc ran %d times on a hit" % len(created)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000,
                    help="entries for the memory backend (and dbm unless --dbm-n); default 200000")
    ap.add_argument("--dbm-n", type=int, default=None,
                    help="entries for the dbm backend; default: --n")
    ap.add_argument("--file-n", type=int, default=2000,
                    help="entries for the file backend; default 2000")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="minimum timing duration per backend and mode; default 2")
    ap.add_argument("--seed", type=int, default=20240601, help="RNG seed")
    ap.add_argument("--backends", default="memory,dbm,file",
                    help="comma-separated subset of memory,dbm,file")
    args = ap.parse_args()

    sizes = {
        "memory": args.n,
        "dbm": args.dbm_n if args.dbm_n is not None else args.n,
        "file": args.file_n,
    }

    print("- Python %s (%s), %s" % (platform.python_version(), sys.executable, platform.platform()))
    print("- Beaker %s" % beaker.__version__)
    print("- CPUs visible: %s" % os.cpu_count())
    print("- key: %d random bytes as hex str; value: %d random bytes; cache.expire=%d; seed=%d; >= %.1f s per row"
          % (KEY_BYTES, VALUE_BYTES, EXPIRE, args.seed, args.seconds))
    sys.stdout.flush()

    rows, notes = [], []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend not in sizes:
            raise SystemExit("unknown backend %r" % backend)
        bench_backend(backend, sizes[backend], args.seconds, args.seed, rows, notes)

    for note in notes:
        print("- " + note)
    print()
    print("| backend | mode | N | hits timed | hits/s | µs per hit |")
    print("|---|---|---:|---:|---:|---:|")
    for backend, mode, n, hits, rate, us in rows:
        print("| %s | %s | %d | %d | %s | %s |" % (backend, mode, n, hits, fmt(rate), fmt(us)))


def fmt(x):
    """Three significant figures, without scientific notation."""
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "%.1f" % x
    if x >= 1:
        return "%.2f" % x
    return "%.3g" % x


if __name__ == "__main__":
    main()
