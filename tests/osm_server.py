"""A recorded OpenStreetMap web service on 127.0.0.1, so the online POI path runs for real offline.

It answers Overpass ``/interpreter`` queries with Overpass JSON converted from an OSM XML file
and Nominatim ``/search`` queries from a table of recorded places. OSMnx talks to it over HTTP
exactly as it talks to the real servers (requests, caching, error handling); only the answers are
recorded. ``mode`` switches on the failures the real servers produce.
"""

from __future__ import annotations

import bz2
import json
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

MODES = ("ok", "busy", "remark", "hang")
PLACE = "West Oakland, Oakland, California"  # the area of ../shared/data/pois/west_oakland.osm.bz2 (conftest.server)


def overpass_json_from_osm_xml(path: Path) -> dict:
    """Convert an OSM XML file (.osm or .osm.bz2) to the JSON an Overpass ``out;`` query returns."""
    opener = bz2.open if path.name.endswith(".bz2") else open
    with opener(path, "rb") as fh:
        root = ET.parse(fh).getroot()
    elements = []
    for el in root:
        if el.tag not in ("node", "way", "relation"):
            continue
        item: dict = {"type": el.tag, "id": int(el.get("id"))}
        if el.tag == "node":
            item["lat"], item["lon"] = float(el.get("lat")), float(el.get("lon"))
        elif el.tag == "way":
            item["nodes"] = [int(nd.get("ref")) for nd in el.findall("nd")]
        else:
            item["members"] = [
                {"type": m.get("type"), "ref": int(m.get("ref")), "role": m.get("role", "")}
                for m in el.findall("member")
            ]
        tags = {t.get("k"): t.get("v") for t in el.findall("tag")}
        if tags:
            item["tags"] = tags
        elements.append(item)
    return {"version": 0.6, "generator": "recorded for tests", "elements": elements}


def nominatim_area(name: str, bounds: tuple[float, float, float, float]) -> list[dict]:
    """A Nominatim ``/search`` answer (format=json, polygon_geojson=1) for a rectangular area."""
    w, s, e, n = bounds
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    return [
        {
            "place_id": 1, "licence": "ODbL", "osm_type": "relation", "osm_id": 1,
            "lat": str((s + n) / 2), "lon": str((w + e) / 2), "class": "boundary",
            "type": "administrative", "place_rank": 20, "importance": 0.5, "name": name,
            "display_name": name, "boundingbox": [str(s), str(n), str(w), str(e)],
            "geojson": {"type": "Polygon", "coordinates": [ring]},
        }
    ]  # fmt: skip


def nominatim_point(name: str, lat: float, lon: float) -> list[dict]:
    """A Nominatim answer whose only result is a point (a shop, an address)."""
    return [
        {
            "place_id": 2, "osm_type": "node", "osm_id": 2, "lat": str(lat), "lon": str(lon),
            "class": "amenity", "type": "cafe", "importance": 0.1, "name": name,
            "display_name": name, "boundingbox": [str(lat), str(lat), str(lon), str(lon)],
            "geojson": {"type": "Point", "coordinates": [lon, lat]},
        }
    ]  # fmt: skip


class RecordedOSMServer:
    """Context manager: a threaded HTTP server with recorded Overpass and Nominatim answers.

    Use ``url + "/api"`` as ``osmnx.settings.overpass_url`` and ``url + "/nominatim"`` as
    ``osmnx.settings.nominatim_url``. ``requests`` lists ``(method, path)`` of what was asked.
    """

    def __init__(self, *, overpass: dict, places: dict[str, list[dict]], hang_s: float = 3.0):
        self.overpass = overpass
        self.places = places
        self.hang_s = hang_s
        self.mode = "ok"
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RecordedOSMServer:
        recorded = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                url = urlparse(self.path)
                recorded.requests.append(("GET", url.path))
                if not url.path.endswith("/search"):
                    self._send(404, b"not found", "text/plain")
                    return
                query = parse_qs(url.query).get("q", [""])[0]
                self._send(200, json.dumps(recorded.places.get(query, [])).encode())

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorded.requests.append(("POST", self.path))
                if recorded.mode == "hang":
                    time.sleep(recorded.hang_s)
                if recorded.mode == "busy":
                    self._send(429, b"Too Many Requests", "text/plain")
                elif recorded.mode == "remark":
                    answer = {
                        **recorded.overpass,
                        "elements": recorded.overpass["elements"][:5],
                        "remark": 'runtime error: Query timed out in "query" at line 1 after 2 seconds.',
                    }
                    self._send(200, json.dumps(answer).encode())
                else:
                    self._send(200, json.dumps(recorded.overpass).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a hanging handler must not hold up the test
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
