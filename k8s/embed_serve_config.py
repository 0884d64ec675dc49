"""Copy the project's serve_config.yaml into k8s/rayservice.yaml (spec.serveConfigV2), verbatim.

    python k8s/embed_serve_config.py            # rewrite the block
    python k8s/embed_serve_config.py --check    # exit 1 if they differ (tests/test_deploy.py checks too)

Only the serveConfigV2 block is replaced; the comments and layout of the rest of the manifest stay.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2: \|\n(?P<body>(?:(?P=indent)[ ]{2}.*\n|[ \t]*\n)*)", re.M)


def embed(manifest: str, serve_config: str) -> str:
    m = BLOCK.search(manifest)
    if not m:
        raise SystemExit("k8s/rayservice.yaml has no `serveConfigV2: |` block")
    pad = m.group("indent") + "  "
    body = "".join((pad + line if line.strip() else "\n") for line in serve_config.rstrip("\n").splitlines(True))
    return manifest[: m.start("body")] + body.rstrip("\n") + "\n" + manifest[m.end("body"):]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="only report whether the manifest is up to date")
    p.add_argument("--config", default=str(REPO / "serve_config.yaml"))
    p.add_argument("--manifest", default=str(REPO / "k8s" / "rayservice.yaml"))
    a = p.parse_args(argv)
    old = Path(a.manifest).read_text()
    new = embed(old, Path(a.config).read_text())
    if a.check:
        print("up to date" if new == old else "serveConfigV2 differs from serve_config.yaml")
        return 0 if new == old else 1
    Path(a.manifest).write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
