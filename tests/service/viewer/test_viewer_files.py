"""The viewer's files as the API serves them: every module and vendored library with its type
and the page's security headers; nothing else (no path outside the page, not the npm sources);
the vendored versions are the locked ones."""

from __future__ import annotations

import json
import re
from pathlib import Path

from service.viewer import FILES, STATIC
from tests.service.conftest import Api


def test_the_page_modules_and_vendored_libraries_are_served(api: Api) -> None:
    with api.client() as c:
        page = c.get("/viewer")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        linked = re.findall(r'(?:src|href)="/viewer/([^"]+)"', page.text)
        modules = sorted(name for name in FILES if name.startswith("js/"))
        assert {"js/main.js", "vendor/uPlot.min.css", "viewer.css"} <= set(linked)
        for name in [*linked, *modules, "vendor/uPlot.esm.js", "vendor/LICENSE-uplot.txt"]:
            r = c.get(f"/viewer/{name}")
            assert r.status_code == 200, name
            assert r.headers["x-content-type-options"] == "nosniff"
        for js in modules:
            assert c.get(f"/viewer/{js}").headers["content-type"].startswith("text/javascript")
            for imported in re.findall(r'from "\.{1,2}/([^"]+)"', (STATIC / js).read_text()):
                assert imported in FILES or f"js/{imported}" in FILES, (js, imported)


def test_nothing_else_is_served(api: Api) -> None:
    with api.client() as c:
        for name in ("vendor-src/package.json", "vendor-src/colormap.py", "../viewer.py",
                     "..%2Fviewer.py", "js/../../viewer.py", "nope.js"):
            r = c.get(f"/viewer/{name}")
            assert r.status_code == 404, name
            assert r.json()["error"]["reason"] == "not_found"


def test_the_vendored_libraries_are_the_locked_versions() -> None:
    src = STATIC / "vendor-src"
    wanted = json.loads((src / "package.json").read_text())["dependencies"]
    locked = json.loads((src / "package-lock.json").read_text())["packages"]
    for name, version in wanted.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} is not pinned"
        assert locked[f"node_modules/{name}"]["version"] == version
    assert "uPlot.esm.js" in {p.name for p in Path(STATIC / "vendor").iterdir()}
    banner = (STATIC / "vendor" / "uPlot.esm.js").read_text()[:300]
    assert f"v{wanted['uplot']}" in banner
