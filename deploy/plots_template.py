"""Writes ``.dvc/plots.html``: DVC's page template for ``dvc plots show|diff`` with vega,
vega-lite and vega-embed inside it, so the plots draw without internet (DVC's own page loads
them from a CDN, and a machine without internet shows a blank page). The three builds come
from the npm registry at the pinned versions below, checked against their published sha512
integrity; ``.dvc/config`` names the template (``plots.html_template``). Run by setup.sh.

    .venv/bin/python deploy/plots_template.py [--registry URL]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".dvc" / "plots.html"
# (package, version, file in the tarball, the registry's dist.integrity); vega-lite 5 reads DVC's templates
PINNED = [
    ("vega", "5.33.1", "package/build/vega.min.js",
     "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    ("vega-lite", "5.23.0", "package/build/vega-lite.min.js",
     "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    ("vega-embed", "6.29.0", "package/build/vega-embed.min.js",
     "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
]
# DVC fills {scripts} with its CDN tags: kept inside a comment, where they load nothing
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot (isim, offline)</title>
    <!-- __VERSIONS__: deploy/plots_template.py -->
    <!-- DVC's CDN scripts, unused: {scripts} -->
    __SCRIPTS__
    <style>
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(package: str, version: str, member: str, integrity: str, registry: str) -> str:
    url = f"{registry.rstrip('/')}/{package}/-/{package}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as r:
        blob = r.read()
    algo, want = integrity.split("-", 1)
    got = base64.b64encode(hashlib.new(algo, blob).digest()).decode()
    if got != want:
        raise SystemExit(f"{url}: {algo} {got} is not the pinned {want}; refusing to vendor it")
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise SystemExit(f"{url}: no {member} in the package")
        return f.read().decode("utf-8")


def page(registry: str) -> str:
    scripts = []
    for package, version, member, integrity in PINNED:
        code = fetch(package, version, member, integrity, registry)
        # a literal "</script>" inside the code would end the inline element early
        code = code.replace("</script", "<\\/script")
        scripts.append(f"<script>/* {package} {version} */\n{code}\n</script>")
    versions = ", ".join(f"{p} {v}" for p, v, _, _ in PINNED)
    # the vendored code goes in last: it may hold text that looks like a placeholder
    return PAGE.replace("__VERSIONS__", versions).replace("__SCRIPTS__", "\n".join(scripts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registry", default=os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org"))
    a = ap.parse_args()
    text = page(a.registry)
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, prefix=".plots.", suffix=".html")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, OUT)
    print(f"{OUT.relative_to(ROOT)}: dvc plots template with vega, vega-lite and vega-embed inline "
          f"({len(text) // 1024} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
