#!/usr/bin/env python3
"""Cross-check AskPro's Retell signatures against the official Python SDK (retell-sdk).

Usage:
  retell_crosscheck.py version
      print the installed retell-sdk version
  retell_crosscheck.py sign <key> <body-file> [<timestamp-ms>]
      print the SDK's x-retell-signature value for the body (now, or at timestamp-ms)
  retell_crosscheck.py verify <key> <body-file> <signature> [<now-ms>]
      exit 0 if the SDK accepts the signature, 1 if it rejects it
      (with now-ms the SDK judges the 5-minute window against that clock)

The body file is read as raw bytes and must be UTF-8: the SDK signs text, which it encodes as
UTF-8 again, so the signed bytes are exactly the file's bytes. Exit code 2 means a usage error.
"""

import sys

try:
    import retell
    from retell.lib import webhook_auth
except ImportError as exc:  # pragma: no cover - reported to the Rust test
    sys.stderr.write(f"retell-sdk is not importable ({exc}); run scripts/test to install it\n")
    sys.exit(3)


def read_body(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def usage() -> int:
    sys.stderr.write(__doc__ or "")
    return 2


def main(argv: list) -> int:
    if len(argv) == 1 and argv[0] == "version":
        print(retell.__version__)
        return 0
    if argv and argv[0] == "sign" and len(argv) in (3, 4):
        key, body = argv[1], read_body(argv[2])
        timestamp = int(argv[3]) if len(argv) == 4 else None
        # SDK: symmetric["sign"](input_str, secret, timestamp=None) -> "v=<ms>,d=<hex>"
        print(webhook_auth.symmetric["sign"](body, key, timestamp))
        return 0
    if argv and argv[0] == "verify" and len(argv) in (4, 5):
        key, body, signature = argv[1], read_body(argv[2]), argv[3]
        if len(argv) == 5:
            # SDK: symmetric["verify"](input_str, secret, signature, opts) -> bool
            ok = webhook_auth.symmetric["verify"](body, key, signature, {"timestamp": int(argv[4])})
        else:
            # SDK public API: verify(body, api_key, signature) -> bool (clock = now)
            ok = webhook_auth.verify(body, key, signature)
        print("valid" if ok else "invalid")
        return 0 if ok else 1
    return usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
