#!/usr/bin/env python3
"""Cost of a cache *hit* on memcached in Python, for a side-by-side with
carboy's memcached backend (engine/backends/memcached/benches/memcached.rs
runs this script against the memcached it starts, in the same run, and
prints the rows beside its own).

Rows, each timed over ``--n`` calls on one key after a warm-up of n/10, in
``--rounds`` rounds that take turns (raw, dogpile, Beaker, raw, ...), so that
a load change on a shared machine hits every row alike; the median round is
reported (as the Rust benchmark does):

* ``pymemcache get + pickle.loads``     -- the raw client, the Python baseline
* ``dogpile.cache get_or_create``       -- ``region.get_or_create(key, creator)``
  on a ``dogpile.cache.pymemcache`` region (expiration 3600 s)
* ``Beaker ext:memcached get_or_create`` -- ``cache.get(key, createfunc=f)``
  on a ``CacheManager(type="ext:memcached", url=...)`` namespace (expire
  3600 s; Beaker 1.14 talks to memcached through python-memcached, module
  ``memcache``, which is forced here so that the row names its client)

The value is the same record as redis_hits.py's (a dict with an id, two
strings, a list of two roles and a counter). Every timed call is a hit; the
creators raise if they run. Output: one line per row,
``row<TAB><name><TAB><microseconds per call><TAB><commands per call>``
(from the server's ``stats``: ``cmd_get`` counts keys fetched, plus
``cmd_set``/``cmd_touch``/deletes when a row sends any), then versions.

With ``--threads T`` the script then measures *throughput*: the same three
rows, each run by T Python threads (``threading``) at once for ``--seconds``
(after a warm-up of a tenth of that, at least 0.2 s), each thread cycling
over ``KEYS`` pre-populated keys (throughput.py, beside this script, runs
the rows; the same record, stored by that row's own library; thread i
starts at key i). Each library's clients are used the way
it documents for threads: one ``pymemcache.client.base.PooledClient``
(``max_pool_size=T``), one dogpile.cache region (its memcached backends keep
a client per thread, in a ``threading.local``), one Beaker namespace (its
python-memcached ``memcache.Client`` is a ``threading.local``: one
connection per thread). One line per row: ``throughput<TAB><name><TAB><hits
per second, all threads together><TAB><threads>``.

    pip install pymemcache python-memcached dogpile.cache Beaker
    python3 tools/bench/beaker/memcached_hits.py --url 127.0.0.1:11211 [--n 20000] [--rounds 15] [--threads 8] [--seconds 2]
"""

import argparse
import pickle
import statistics
import sys
import time
from importlib.metadata import version

import beaker
import dogpile
import pymemcache
from beaker.cache import CacheManager
from beaker.util import parse_cache_config_options
from dogpile.cache import make_region
from pymemcache.client.base import Client, PooledClient

# throughput.py, beside this script; importing it writes no __pycache__
# into the source tree.
sys.dont_write_bytecode = True
from throughput import library_rows, never  # noqa: E402

USER = {
    "id": 42,
    "name": "Alice Example",
    "email": "alice@example.invalid",
    "roles": ["admin", "editor"],
    "logins": 1234,
}

# Counters of memcached's `stats` that commands move, by the name printed.
COUNTERS = {
    "get": (b"cmd_get",),
    "set": (b"cmd_set",),
    "touch": (b"cmd_touch",),
    "delete": (b"delete_hits", b"delete_misses"),
    "incr": (b"incr_hits", b"incr_misses"),
}


def counts(stats_client):
    s = stats_client.stats()
    return {name: sum(s.get(k, 0) for k in keys) for name, keys in COUNTERS.items()}


def interleaved(n, rounds, rows, stats_client):
    """Median microseconds per call and commands per call of each row."""
    per_round = max(n // rounds, 1)
    for _, call in rows:
        for _ in range(max(n // 10, 1)):
            call()
    samples = [[] for _ in rows]
    sent = [dict.fromkeys(COUNTERS, 0) for _ in rows]
    for _ in range(rounds):
        for i, (_, call) in enumerate(rows):
            before = counts(stats_client)
            started = time.perf_counter()
            for _ in range(per_round):
                call()
            samples[i].append((time.perf_counter() - started) / per_round)
            after = counts(stats_client)
            for k in COUNTERS:
                sent[i][k] += after[k] - before[k]
    for (name, _), times, cmds in zip(rows, samples, sent):
        calls = per_round * rounds
        per_call = " + ".join(f"{v / calls:.2f} {k}" for k, v in cmds.items() if v)
        print(f"row\t{name}\t{statistics.median(times) * 1e6:.2f}\t{per_call}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="host:port")
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=0, help="also measure throughput from T threads")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each throughput row")
    a = p.parse_args()
    host, port = a.url.rsplit(":", 1)
    stats_client = Client((host, int(port)))

    raw = Client((host, int(port)))
    raw.set("py:raw:user", pickle.dumps(USER))

    def raw_get():
        v = pickle.loads(raw.get("py:raw:user"))
        assert v["id"] == 42

    region = make_region().configure(
        "dogpile.cache.pymemcache",
        expiration_time=3600,
        arguments={"url": [a.url], "memcached_expire_time": 7200},
    )
    region.get_or_create("py:dogpile:user", lambda: USER)

    def dogpile_hit():
        v = region.get_or_create("py:dogpile:user", never)
        assert v["id"] == 42

    manager = CacheManager(
        **parse_cache_config_options(
            {
                "cache.type": "ext:memcached",
                "cache.url": a.url,
                "cache.memcache_module": "memcache",
                "cache.expire": 3600,
            }
        )
    )
    users = manager.get_cache("py_beaker_users")
    users.get("user", createfunc=lambda: USER)

    def beaker_hit():
        v = users.get("user", createfunc=never)
        assert v["id"] == 42

    rows = [
        ("pymemcache get + pickle.loads", raw_get),
        ("dogpile.cache get_or_create", dogpile_hit),
        ("Beaker ext:memcached get_or_create", beaker_hit),
    ]
    interleaved(a.n, a.rounds, rows, stats_client)

    if a.threads > 0:
        pooled = PooledClient((host, int(port)), max_pool_size=a.threads)
        names = [
            "pymemcache get + pickle.loads",
            "dogpile.cache get_or_create",
            "Beaker ext:memcached get_or_create",
        ]
        library_rows(names, a.threads, a.seconds, USER, pooled, region, users)
    print(
        f"versions\tPython {sys.version.split()[0]}, pymemcache {pymemcache.__version__}, "
        f"python-memcached {version('python-memcached')}, "
        f"dogpile.cache {dogpile.__version__}, Beaker {beaker.__version__}"
    )


if __name__ == "__main__":
    main()
