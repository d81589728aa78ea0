"""Trims str0m's published manifest to what its `chat` example needs (bench.sh).

Drops the test-only dev-dependencies and the crypto back-ends the example does not use (the
default aws-lc-rs stays): some of them (str0m-openssl and str0m-rust-crypto 0.7) did not
resolve from the crates.io index when this was written, and cargo resolves every optional
dependency of the root package.
"""
import re
import sys

KEEP_DEV = {"rouille", "serde_json", "systemstat", "tracing-subscriber"}
CRYPTO = {"str0m-openssl", "str0m-rust-crypto", "str0m-apple-crypto", "str0m-wincrypto"}
FEATURES = r"apple-crypto|openssl|openssl-dimpl|rust-crypto|vendored|wincrypto|wincrypto-dimpl"

path = sys.argv[1]
out = []
for section in re.split(r"(?m)^(?=\[)", open(path).read()):
    head = section.split("\n", 1)[0]
    m = re.match(r"\[(?:target\.[^\]]*\.)?(dev-)?dependencies\.([^\]]+)\]", head)
    if m and ((m.group(1) and m.group(2) not in KEEP_DEV) or m.group(2) in CRYPTO):
        continue
    if head == "[features]":
        section = re.sub(rf"(?m)^({FEATURES}) = \[[^\]]*\]\n", "", section)
    out.append(section)
open(path, "w").write("".join(out))
