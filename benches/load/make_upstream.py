#!/usr/bin/env python3
"""Builds a static upstream index tree for the load benchmark (stdlib only).

Layout under OUT:
  simple/<name>/index.html      PEP 503 pages (nginx serves them as text/html)
  packages/<file>               the files the pages link to
Projects:
  bigproj   ~1 MB page (thousands of files), plus a 100 KB and a 15 MB wheel that really exist
  dep00..dep19, app             20 small, installable wheels in a dependency tree (the
                                "~20-package set" for the cold/warm client timings)
  huge      one 1 GiB file (only with --huge)
"""
import argparse
import base64
import hashlib
import io
import os
import zipfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def wheel_bytes(name, version, requires):
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": meta,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: larder-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record += f"{path},sha256={digest},{len(data)}\n"
        record += f"{info}/RECORD,,\n"
        z.writestr(f"{info}/RECORD", record)
    return f"{dist}-{version}-py3-none-any.whl", buf.getvalue()


def page(out, name, links):
    d = os.path.join(out, "simple", name)
    os.makedirs(d, exist_ok=True)
    rows = "".join(
        f'    <a href="/packages/{fn}#sha256={sha}" data-requires-python="&gt;=3.8">{fn}</a><br />\n'
        for fn, sha in links
    )
    html = f"<!DOCTYPE html>\n<html>\n  <body>\n    <h1>Links for {name}</h1>\n{rows}  </body>\n</html>\n"
    with open(os.path.join(d, "index.html"), "w") as f:
        f.write(html)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--huge", action="store_true", help="also a 1 GiB file (project `huge`)")
    args = ap.parse_args()
    pkgs = os.path.join(args.out, "packages")
    os.makedirs(pkgs, exist_ok=True)

    # bigproj: two real wheels of 100 KB and 15 MB, and enough listed-only files for ~1 MB.
    links = []
    for fn, size in [("bigproj-1.0-py3-none-any.whl", 100 * 1024), ("bigproj-1.1-py3-none-any.whl", 15 * 1024 * 1024)]:
        path = os.path.join(pkgs, fn)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        links.append((fn, sha256_file(path)))
    i = 0
    while sum(len(fn) * 2 + 160 for fn, _ in links) < 1_000_000:
        fn = f"bigproj-0.{i}-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
        links.append((fn, hashlib.sha256(fn.encode()).hexdigest()))
        i += 1
    page(args.out, "bigproj", links)

    # A 20-package tree: app -> dep00..dep18, each depN -> depN+1 (so resolution walks).
    names = [f"dep{n:02d}" for n in range(19)] + ["app"]
    for n, name in enumerate(names):
        if name == "app":
            requires = [f"dep{k:02d}" for k in range(19)]
        elif n + 1 < 19:
            requires = [f"dep{n + 1:02d}>=1.0"]
        else:
            requires = []
        entries = []
        for version in ["1.0", "1.1"]:
            fn, data = wheel_bytes(name, version, requires)
            with open(os.path.join(pkgs, fn), "wb") as f:
                f.write(data)
            entries.append((fn, hashlib.sha256(data).hexdigest()))
        page(args.out, name, entries)

    if args.huge:
        path = os.path.join(pkgs, "huge-1.0-py3-none-any.whl")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                for _ in range(1024):
                    f.write(os.urandom(1 << 20))
        page(args.out, "huge", [("huge-1.0-py3-none-any.whl", sha256_file(path))])


if __name__ == "__main__":
    main()
