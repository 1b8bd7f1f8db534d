"""The dashboard's Plotly.js: the cartesian partial bundle instead of the full one.

Dash's graphs load the full Plotly.js (4.8 MB) unless the page already has one. A cold browser
spends most of the fleet view's first load compiling it: 2.1-2.8 s against 1.3-1.5 s with the
cartesian bundle (1.5 MB: scatter, bar, histogram, heatmap, box, pie, which is every trace the
views draw), measured with headless Chromium on 2 cores (README, "A thousand robots"). Dash serves
every script in ``dashboard/assets`` with the page, and its graphs then use that Plotly.

`make install` fetches the bundle once from the npm registry, pinned to the plotly.js version that
the installed plotly package ships and checked against the registry's sha512; the dashboard never
downloads anything. Without the file the dashboard still works, with the full bundle.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
import tarfile
import urllib.request
from pathlib import Path

VERSION = "4.1.1"  # the plotly.js that plotly 7.1 (from dash 4.4.1) ships; a unit test checks they agree
PACKAGE = "plotly.js-cartesian-dist-min"
URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
INTEGRITY = "sha512-o8GrFeusncwBIxbBynRJpY4pkgVB6caM+JLpwrLYbbsO7dZ8FJ+SVN2Fr+L7kiG/Z6w4P5O0Jus/Qr5EefHVeg=="
MEMBER = "package/plotly-cartesian.min.js"
ASSET = Path(__file__).parent / "assets" / "plotly-cartesian.min.js"


def shipped_version() -> str:
    """The plotly.js version of the full bundle that the installed plotly package ships."""
    import plotly

    head = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text()[:200]
    found = re.search(r"plotly\.js v(\d+\.\d+\.\d+)", head)
    if not found:
        raise RuntimeError("the installed plotly package's plotly.min.js does not say its version")
    return found.group(1)


def fetch(dest: Path = ASSET, url: str = URL) -> Path:
    """Download the pinned tarball, check its sha512, and write the bundle to `dest`."""
    with urllib.request.urlopen(url, timeout=60) as response:
        tarball = response.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != INTEGRITY:
        raise RuntimeError(f"{url} has {digest}, the pinned integrity is {INTEGRITY}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(MEMBER)  # this one file by name: no path from the archive is used
        if member is None:
            raise RuntimeError(f"{url} holds no {MEMBER}")
        script = member.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(script)
    tmp.replace(dest)
    return dest


if __name__ == "__main__":
    if shipped_version() != VERSION:
        sys.exit(f"plotly ships plotly.js {shipped_version()}, the pinned partial bundle is {VERSION}: update both")
    print(f"wrote {fetch()}")
