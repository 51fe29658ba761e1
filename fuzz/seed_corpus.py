#!/usr/bin/env python3
"""Writes the hand-made seed inputs the corpora grew from (fuzz/README.md).

Run from fuzz/: `python3 seed_corpus.py DIR` writes DIR/<target>/seed-*.
The committed corpora are the result of fuzzing from these, minimized with
`cargo fuzz cmin`; the seeds are kept here so the corpus can be regrown.
"""
import json
import os
import struct
import sys

REQUEST_HEAD, BODY, BODY_FILE, END = 0x01, 0x02, 0x03, 0x04
HELLO, RESPONSE_HEAD, RESPONSE_BODY, RESPONSE_END, ABORT = 0x10, 0x11, 0x12, 0x13, 0x14


def frame(kind, payload=b""):
    return bytes([kind]) + struct.pack(">I", len(payload)) + payload


def s(b):
    return struct.pack(">I", len(b)) + b


def request_payload(fields, headers):
    out = b"".join(s(f) for f in fields) + struct.pack(">I", len(headers))
    return out + b"".join(s(n) + s(v) for n, v in headers)


def response_payload(status, headers):
    out = struct.pack(">HI", status, len(headers))
    return out + b"".join(s(n) + s(v) for n, v in headers)


FIELDS = [b"POST", b"/a%20b?x=1", b"/a%20b", b"x=1", b"HTTP/1.1", b"http",
          b"localhost", b"3000", b"127.0.0.1", b"5555"]
HEADERS = [(b"host", b"localhost:3000"), (b"content-type", b"text/plain"),
           (b"content-length", b"5"), (b"cookie", b"a=1; b=2")]


def hello(version=1):
    return json.dumps({"version": version, "worker_id": 7, "pid": 1234},
                      separators=(",", ":")).encode()


# Cursor encoding (fuzz/checks.rs): a field is a tag byte (low 6 bits: a
# length; top bits 11: repeat to u16*32 bytes) and its bytes.
def field(b):
    assert len(b) < 64
    return bytes([len(b)]) + b


def big(n32, chunk=b""):
    return bytes([0xC0 | len(chunk)]) + chunk + struct.pack(">H", n32)


def cursor_headers(pairs, total=None):
    tag = len(pairs) | (0x80 if total is not None else 0)
    out = bytes([tag]) + b"".join(field(n) + field(v) for n, v in pairs)
    return out + (struct.pack(">H", total) if total is not None else b"")


SEEDS = {
    "frame_decoder": {
        "request": frame(REQUEST_HEAD, request_payload(FIELDS, HEADERS))
        + frame(BODY, b"hello") + frame(END),
        "request-file": frame(REQUEST_HEAD, request_payload(FIELDS, []))
        + frame(BODY_FILE, b"/tmp/rustrack/body-1") + frame(END),
        "response": frame(HELLO, hello())
        + frame(RESPONSE_HEAD, response_payload(200, [(b"content-type", b"text/plain")]))
        + frame(RESPONSE_BODY, b"ok\n") + frame(RESPONSE_END),
        "response-abort": frame(RESPONSE_HEAD, response_payload(200, []))
        + frame(RESPONSE_BODY, b"part") + frame(ABORT, b"app raised while streaming"),
        "hello-v2": frame(HELLO, hello(2)),
        "unknown-kind": frame(0x7F, b"x"),
        "too-large": bytes([BODY]) + struct.pack(">I", (1 << 20) + 1),
        "partial": frame(BODY, b"abcdef")[:8],
    },
    "request_head_roundtrip": {
        "typical": b"\x00" + b"".join(field(f) for f in FIELDS)
        + cursor_headers(HEADERS),
        "after-end": b"\x01" + b"".join(field(f) for f in FIELDS) + cursor_headers([]),
        "after-body": b"\x02" + b"\x10" * 16 + b"".join(field(f) for f in FIELDS)
        + cursor_headers([(b"x-a", b"1")]),
        # 44 bytes of lengths + 32766*32 + 20 = exactly 1 MiB; 21 is one over.
        "payload-limit": b"\x00" + big(32766) + field(b"a" * 20) + b"\x00" * 8 + b"\x00",
        "payload-over": b"\x00" + big(32766) + field(b"a" * 21) + b"\x00" * 8 + b"\x00",
        "headers-limit": b"\x00" + b"\x00" * 10 + cursor_headers([(b"", b"")], 1000),
        "headers-over": b"\x00" + b"\x00" * 10 + cursor_headers([(b"a", b"b")], 1001),
    },
    "response_head": {
        "raw-200": response_payload(200, [(b"content-type", b"text/html"),
                                          (b"set-cookie", b"a=1")]),
        "raw-42": response_payload(42, []),
        "typical": b"\x00\x00\xc8" + cursor_headers([(b"content-type", b"text/plain"),
                                                    (b"set-cookie", b"a=1")]),
        "status-1000": b"\x01\x03\xe8" + cursor_headers([]),
        # one header line whose value is 65535*32 bytes: over 1 MiB
        "payload-over": b"\x00\x01\x2c" + b"\x01" + field(b"") + big(0xFFFF),
        "headers-over": b"\x02" + b"\x00" * 16 + b"\x00\xc8"
        + cursor_headers([(b"x", b"y")], 1001),
    },
    "rack_headers": {
        "content-type": b"\x0cContent-Typetext/html; charset=utf-8",
        "forwarded": b"\x0fx-forwarded-for1.2.3.4",
        "underscore": b"\x0fx_forwarded_for1.2.3.4",
        "proxy": b"\x05Proxyhttp://evil",
        "status": b"\x06Status200",
        "crlf": b"\x05x-bada\r\nSet-Cookie: x=1",
        "nul": b"\x01xa\x00b",
        "ipv6": b"\x00[::1]:3000",
        "host-port": b"\x00example.com:8080",
        "token": b"\x03a.bvalue",
        "multiline": b"\x0aset-cookiea=1\nb=2\nc=3",
    },
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "corpus"
    for target, seeds in SEEDS.items():
        os.makedirs(os.path.join(root, target), exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(root, target, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
