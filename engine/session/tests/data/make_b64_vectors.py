#!/usr/bin/env python3
"""Writes b64_vectors.json beside this file: Python's own answers for
base64.b64encode(s, altchars), base64.b64decode(s, altchars) and
base64.b64decode(s, altchars, validate=True), successes and errors.

Run once, by hand, with Python 3.11 (the semantics carboy_session::b64
follows); the JSON is committed and engine/session/tests/b64.rs checks
every vector. Deterministic: a fixed seed, so a re-run on the same Python
writes the same file.

    python3.11 engine/session/tests/data/make_b64_vectors.py
"""

import base64
import binascii
import json
import os
import random
import sys

if sys.version_info[:2] != (3, 11) and "--any-python" not in sys.argv:
    sys.exit(
        "run with Python 3.11 (found %s): b64decode's validate mode changed "
        "in later versions; --any-python to override" % sys.version.split()[0]
    )

# binascii.Error messages (CPython 3.11 Modules/binascii.c) -> kind names
# that tests/b64.rs maps to B64Error variants.
KINDS = [
    ("Incorrect padding", "incorrect_padding"),
    ("Invalid base64-encoded string", "invalid_length"),
    ("Leading padding not allowed", "leading_padding"),
    ("Only base64 data is allowed", "not_base64"),
    ("Discontinuous padding not allowed", "discontinuous_padding"),
    ("Excess data after padding", "excess_data_after_padding"),
]


def outcome(fn):
    try:
        return {"output": fn().hex()}
    except AssertionError:
        # b64encode/b64decode assert len(altchars) == 2.
        return {"error": {"kind": "altchars_length", "message": ""}}
    except binascii.Error as e:
        message = str(e)
        for prefix, kind in KINDS:
            if message.startswith(prefix):
                return {"error": {"kind": kind, "message": message}}
        raise SystemExit("unclassified binascii.Error: %r" % message)


def vector(op, data, altchars):
    if op == "encode":
        fn = lambda: base64.b64encode(data, altchars)
    elif op == "decode":
        fn = lambda: base64.b64decode(data, altchars)
    else:
        fn = lambda: base64.b64decode(data, altchars, validate=True)
    v = {
        "op": op,
        "input": data.hex(),
        "altchars": None if altchars is None else altchars.hex(),
    }
    v.update(outcome(fn))
    return v


ALTCHARS = [None, b"-_", b"+/", b"/+", b"aa", b"\x80\x81", b"", b"-", b"-_~"]

ENCODE_INPUTS = [
    b"",
    b"f",
    b"fo",
    b"foo",
    b"foob",
    b"fooba",
    b"foobar",
    b"\xfb\xff",
    b"\xfb\xef\xbe",
    b"\x00",
    b"\x00\x00\x00",
    bytes(range(256)),
    "session caf\u00e9".encode("utf-8"),
]

DECODE_INPUTS = [
    b"",
    b"Zg==",
    b"Zm8=",
    b"Zm9v",
    b"Zm9vYmFy",
    b"Zg",
    b"Zg=",
    b"Z",
    b"Z=",
    b"Z===",
    b"Zm9vY",
    b"=",
    b"===",
    b"=Zg==",
    b"Zg==a",
    b"Zg=a",
    b"Z=g=",
    b"Zg!=",
    b"Zg=!=",
    b"Zg=Zg==",
    b"Zm9v=",
    b"Zm9v==",
    b"Zm9v====",
    b"Zm9v=A",
    b"Zm=9v",
    b"Zg= =",
    b"Zm9v\n",
    b"Zg==\n",
    b"Zm9v\nYmFy\n",
    b"Zm9v YmFy",
    b"QR==",
    b"QUI=",
    b"QUJ=",
    b"+/8=",
    b"-_8=",
    b"+/-_",
    b"//8=",
    b"aa==",
    b"Zg==\xe9",
    b"\xe9Zg==",
    b"\x00Zm9v",
    b"Zm9v\x00",
    b"Zm9vYmFy\r\n",
    b"Zm9v.YmFy",
]


def main():
    rng = random.Random(14)
    vectors = []
    for data in ENCODE_INPUTS:
        for alt in ALTCHARS:
            vectors.append(vector("encode", data, alt))
    for data in DECODE_INPUTS:
        for alt in ALTCHARS:
            for op in ("decode", "decode_validated"):
                vectors.append(vector(op, data, alt))

    # Random encodes.
    for _ in range(150):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        vectors.append(vector("encode", data, rng.choice(ALTCHARS[:6])))

    # Random decodes: mostly base64 characters, with padding, altchars and
    # foreign bytes mixed in.
    pieces = (
        [bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"]
        + [b"="] * 12
        + [b"-", b"_", b"a", b" ", b"\n", b"!", b"\x00", b"\xff", b"~"]
    )
    for _ in range(400):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 14)))
        alt = rng.choice(ALTCHARS[:6])
        vectors.append(vector(rng.choice(("decode", "decode_validated")), data, alt))

    # Real encodings, then damaged: a byte dropped, a byte inserted, cut.
    for _ in range(200):
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
        alt = rng.choice([None, b"-_"])
        enc = bytearray(base64.b64encode(raw, alt))
        how = rng.randrange(4)
        if how == 1:
            del enc[rng.randrange(len(enc))]
        elif how == 2:
            enc.insert(rng.randrange(len(enc) + 1), rng.choice(pieces)[0])
        elif how == 3:
            del enc[rng.randrange(len(enc)):]
        vectors.append(vector(rng.choice(("decode", "decode_validated")), bytes(enc), alt))

    out = {
        "generated_by": "engine/session/tests/data/make_b64_vectors.py",
        "python": sys.version.split()[0],
        "vectors": vectors,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "b64_vectors.json")
    # One vector a line, so that a regeneration diffs readably.
    with open(path, "w") as f:
        f.write('{"generated_by": %s,\n"python": %s,\n"vectors": [\n' % (
            json.dumps(out["generated_by"]), json.dumps(out["python"])))
        f.write(",\n".join(json.dumps(v, sort_keys=True) for v in vectors))
        f.write("\n]}\n")
    kinds = {}
    for v in vectors:
        k = v["error"]["kind"] if "error" in v else "ok"
        kinds[k] = kinds.get(k, 0) + 1
    print("wrote %d vectors to %s: %s" % (len(vectors), path, kinds))


main()
