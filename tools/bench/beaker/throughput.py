"""The ``--threads`` throughput loop that redis_hits.py and memcached_hits.py
share (each imports it from beside itself: a script run as ``python3
tools/bench/beaker/X.py`` has its own directory on ``sys.path``)."""

import itertools
import pickle
import threading
import time

# Keys the throughput rows cycle over (as the Rust benchmarks' rows do).
KEYS = 64


def never():
    raise AssertionError("a creator ran: the call was not a hit")


def throughput(name, threads, seconds, keys, hit):
    """Hits per second of `hit(key)` from `threads` threads at once, over
    `seconds` after a warm-up; thread i cycles over `keys` from key i.
    Prints ``throughput<TAB><name><TAB><hits per second><TAB><threads>``."""
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


def library_rows(names, threads, seconds, value, raw, region, users):
    """The three throughput rows, named `names` (raw, dogpile, Beaker), each
    on ``KEYS`` keys holding `value` that it stores first: `raw`'s get
    (``py:raw:<key>``) + ``pickle.loads``, the dogpile.cache `region`'s
    ``get_or_create`` (``py:dogpile:<key>``) and the Beaker namespace
    `users`' ``get(key, createfunc=...)``; every call is a hit."""
    keys = [f"tp:{i}" for i in range(KEYS)]
    for k in keys:
        raw.set(f"py:raw:{k}", pickle.dumps(value))
        region.get_or_create(f"py:dogpile:{k}", lambda: value)
        users.get(k, createfunc=lambda: value)
    want = value["id"]

    def raw_key(k):
        v = pickle.loads(raw.get(f"py:raw:{k}"))
        assert v["id"] == want

    def dogpile_key(k):
        v = region.get_or_create(f"py:dogpile:{k}", never)
        assert v["id"] == want

    def beaker_key(k):
        v = users.get(k, createfunc=never)
        assert v["id"] == want

    for name, hit in zip(names, [raw_key, dogpile_key, beaker_key]):
        throughput(name, threads, seconds, keys, hit)
