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
over ``KEYS`` pre-populated keys (throughput.py, beside this script, runs
the rows; the same record, stored by that row's own library; thread i
starts at key i). The clients are shared, as the
libraries document them as thread-safe: one ``redis.Redis`` (its connection
pool gives each thread a connection), one dogpile.cache region, one Beaker
namespace (its redis client is one ``redis.StrictRedis`` per url). One
line per row: ``throughput<TAB><name><TAB><hits per second, all threads
together><TAB><threads>``.

    pip install redis dogpile.cache Beaker
    python3 tools/bench/beaker/redis_hits.py --url redis://127.0.0.1:6379/0 [--n 20000] [--threads 8] [--seconds 2]
"""

import argparse
import pickle
import sys
import time

import beaker
import dogpile
import redis
from beaker.cache import CacheManager
from beaker.util import parse_cache_config_options
from dogpile.cache import make_region

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
        names = [
            "redis-py GET + pickle.loads",
            "dogpile.cache get_or_create",
            "Beaker ext:redis get_or_create",
        ]
        library_rows(names, a.threads, a.seconds, USER, raw, region, users)
    print(
        f"versions\tPython {sys.version.split()[0]}, redis-py {redis.__version__}, "
        f"dogpile.cache {dogpile.__version__}, Beaker {beaker.__version__}"
    )


if __name__ == "__main__":
    main()
