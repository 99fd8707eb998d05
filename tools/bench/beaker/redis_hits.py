#!/usr/bin/env python3
"""Cost of a cache *hit* on redis in Python, for a side-by-side with carboy's
redis backend (engine/backends/redis/benches/redis.rs runs this script against
the redis-server it starts, in the same run, and prints the rows beside its
own).

Rows, each timed over ``--n`` calls on one key after a warm-up of n/10:

* ``redis-py GET + pickle.loads``   -- the raw client, the Python baseline
* ``dogpile.cache get_or_create``   -- ``region.get_or_create(key, creator)``
  on a ``dogpile.cache.redis`` region (expiration 3600 s)
* ``Beaker ext:redis get_or_create`` -- ``cache.get(key, createfunc=f)`` on a
  ``CacheManager(type="ext:redis", url=...)`` namespace (expire 3600 s)

The value is the same record as the Rust benchmark's (a dict with an id, two
strings, a list of two roles and a counter). Every timed call is a hit; the
creators raise if they run. Output: one line per row,
``row<TAB><name><TAB><microseconds per call><TAB><redis commands per call>``
(commands counted from the server's ``INFO commandstats``), then versions.

With ``--threads T`` the script then measures *throughput*: the same three
rows, each run by T Python threads (``threading``) at once for ``--seconds``
(after a warm-up of a tenth of that, at least 0.2 s), each thread cycling
over ``KEYS`` pre-populated keys (the same record, stored by that row's own
library; thread i starts at key i). The clients are shared, as the
libraries document them as thread-safe: one ``redis.Redis`` (its connection
pool gives each thread a connection), one dogpile.cache region, one Beaker
namespace (its redis client is one ``redis.StrictRedis`` per url). One
line per row: ``throughput<TAB><name><TAB><hits per second, all threads
together><TAB><threads>``.

    pip install redis dogpile.cache Beaker
    python3 tools/bench/beaker/redis_hits.py --url redis://127.0.0.1:6379/0 [--n 20000] [--threads 8] [--seconds 2]
"""

import argparse
import itertools
import pickle
import sys
import threading
import time

import beaker
import dogpile
import redis
from beaker.cache import CacheManager
from beaker.util import parse_cache_config_options
from dogpile.cache import make_region

USER = {
    "id": 42,
    "name": "Alice Example",
    "email": "alice@example.invalid",
    "roles": ["admin", "editor"],
    "logins": 1234,
}


# Keys the throughput rows cycle over (as the Rust benchmark's rows do).
KEYS = 64


def never():
    raise AssertionError("a creator ran: the call was not a hit")


def commands(client):
    stats = client.info("commandstats")
    return {k: v["calls"] for k, v in stats.items()}


def timed(name, n, call, client):
    for _ in range(max(n // 10, 1)):
        call()
    before = commands(client)
    started = time.perf_counter()
    for _ in range(n):
        call()
    elapsed = time.perf_counter() - started
    after = commands(client)
    sent = sum(after.get(k, 0) - before.get(k, 0) for k in after if k != "cmdstat_info")
    print(f"row\t{name}\t{elapsed / n * 1e6:.2f}\t{sent / n:.2f}")


def throughput(name, threads, seconds, keys, hit):
    """Hits per second of `hit(key)` from `threads` threads at once, over
    `seconds` after a warm-up; thread i cycles over `keys` from key i."""
    counts = [0] * threads
    running = [True]
    failed = []
    ready = threading.Barrier(threads + 1)

    def worker(i):
        mine = itertools.cycle(keys[i % len(keys) :] + keys[: i % len(keys)])
        ready.wait()
        n = 0
        try:
            while running[0]:
                hit(next(mine))
                n += 1
                counts[i] = n
        except BaseException as e:
            failed.append(e)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    ready.wait()
    time.sleep(max(seconds / 10, 0.2))
    before, started = sum(counts), time.perf_counter()
    time.sleep(seconds)
    after, elapsed = sum(counts), time.perf_counter() - started
    running[0] = False
    for t in pool:
        t.join()
    if failed:
        raise failed[0]
    print(f"throughput\t{name}\t{(after - before) / elapsed:.0f}\t{threads}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--threads", type=int, default=0, help="also measure throughput from T threads")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each throughput row")
    a = p.parse_args()
    client = redis.Redis.from_url(a.url)

    client.set("py:raw:user", pickle.dumps(USER))
    raw = redis.Redis.from_url(a.url)

    def raw_get():
        v = pickle.loads(raw.get("py:raw:user"))
        assert v["id"] == 42

    timed("redis-py GET + pickle.loads", a.n, raw_get, client)

    region = make_region().configure(
        "dogpile.cache.redis",
        expiration_time=3600,
        arguments={"url": a.url, "redis_expiration_time": 7200},
    )
    region.get_or_create("py:dogpile:user", lambda: USER)

    def dogpile_hit():
        v = region.get_or_create("py:dogpile:user", never)
        assert v["id"] == 42

    timed("dogpile.cache get_or_create", a.n, dogpile_hit, client)

    manager = CacheManager(
        **parse_cache_config_options(
            {"cache.type": "ext:redis", "cache.url": a.url, "cache.expire": 3600}
        )
    )
    users = manager.get_cache("py_beaker_users")
    users.get("user", createfunc=lambda: USER)

    def beaker_hit():
        v = users.get("user", createfunc=never)
        assert v["id"] == 42

    timed("Beaker ext:redis get_or_create", a.n, beaker_hit, client)

    if a.threads > 0:
        keys = [f"tp:{i}" for i in range(KEYS)]
        for k in keys:
            raw.set(f"py:raw:{k}", pickle.dumps(USER))
            region.get_or_create(f"py:dogpile:{k}", lambda: USER)
            users.get(k, createfunc=lambda: USER)

        def raw_key(k):
            v = pickle.loads(raw.get(f"py:raw:{k}"))
            assert v["id"] == 42

        def dogpile_key(k):
            v = region.get_or_create(f"py:dogpile:{k}", never)
            assert v["id"] == 42

        def beaker_key(k):
            v = users.get(k, createfunc=never)
            assert v["id"] == 42

        for name, hit in [
            ("redis-py GET + pickle.loads", raw_key),
            ("dogpile.cache get_or_create", dogpile_key),
            ("Beaker ext:redis get_or_create", beaker_key),
        ]:
            throughput(name, a.threads, a.seconds, keys, hit)
    print(
        f"versions\tPython {sys.version.split()[0]}, redis-py {redis.__version__}, "
        f"dogpile.cache {dogpile.__version__}, Beaker {beaker.__version__}"
    )


if __name__ == "__main__":
    main()
