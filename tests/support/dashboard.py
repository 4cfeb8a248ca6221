"""Fetch the dashboard page and every asset it references, as a browser would on first load."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import aiohttp

ASSET = re.compile(r"""<(?:script[^>]*\ssrc|link[^>]*\shref|img[^>]*\ssrc)=["']([^"'#]+)["']""")


async def fetch_dashboard(base: str) -> dict[str, tuple[int, bytes]]:
    """URL -> (status, body) for "/" and each script, stylesheet, icon and image "/" names
    (links to other pages are not assets: only those under /static/)."""
    out: dict[str, tuple[int, bytes]] = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(urljoin(base, "/")) as resp:
            page = await resp.read()
            out["/"] = (resp.status, page)
        for path in sorted(set(ASSET.findall(page.decode()))):
            if path.startswith("/static/"):
                async with http.get(urljoin(base, path)) as resp:
                    out[path] = (resp.status, await resp.read())
    return out
