"""fetch_pois against every way a network can fail: each ends within seconds with a POIError that
names the offline options (an OSM extract, a POI table, the bundled Helsinki file).

The recorded OpenStreetMap service of tests/osm_server.py plays a working Nominatim; the faults
come from a raw TCP server here, which misbehaves below HTTP: it never accepts, accepts and never
answers, resets, cuts the body short, answers with error codes, login pages or broken JSON, or
trickles the body a byte at a time.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest
from osm_server import RecordedOSMServer, nominatim_area

from trajmoe.errors import POIError
from trajmoe.pois.online import fetch_pois

BBOX = (24.93, 60.16, 24.95, 60.17)  # central Helsinki, a few hundred metres
PLACE = "Kallio, Helsinki, Finland"
OFFLINE_WORDS = (".osm.pbf", "POI table", "Helsinki")
Behaviour = Callable[[socket.socket], None]


class RawServer:
    """A TCP server on 127.0.0.1 whose every connection gets ``behaviour(conn)`` after the request.

    ``behaviour=None`` listens but never accepts: the kernel completes the handshake, the request
    is sent, and nothing ever comes back.
    """

    def __init__(self, behaviour: Behaviour | None):
        self.behaviour = behaviour
        self._stop = threading.Event()

    def __enter__(self) -> RawServer:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        if self.behaviour is not None:
            threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                request += chunk
            self.behaviour(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.sock.close()


def answer(status: str, body: bytes, kind: str = "application/json") -> Behaviour:
    def send(conn: socket.socket) -> None:
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
    return send


def silent(conn: socket.socket) -> None:
    time.sleep(4)  # longer than any timeout below; the client must give up first


def reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close -> RST


def cut_short(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                 b'{"version": 0.6, "elements": [')


def trickle(conn: socket.socket) -> None:
    """A byte every 0.3 s: each read is quick, the whole answer never comes (stops after 6 s)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    end = time.monotonic() + 6
    while time.monotonic() < end:
        conn.sendall(b" ")
        time.sleep(0.3)


@pytest.fixture
def osmnx_settings(tmp_path):
    """No DNS-over-HTTPS, no cache (every fault reaches the network), a private cache folder."""
    import osmnx as ox

    names = ("overpass_url", "nominatim_url", "doh_url_template", "cache_folder", "use_cache",
             "requests_timeout", "overpass_rate_limit", "requests_kwargs")
    saved = {name: getattr(ox.settings, name) for name in names}
    ox.settings.doh_url_template = None
    ox.settings.cache_folder = str(tmp_path / "osmnx-cache")
    ox.settings.use_cache = False
    yield ox.settings
    for name, value in saved.items():
        setattr(ox.settings, name, value)


@pytest.fixture
def nominatim(osmnx_settings):
    """A working (recorded) Nominatim that knows PLACE, so place queries reach Overpass."""
    with RecordedOSMServer(overpass={"elements": []}, places={PLACE: nominatim_area(PLACE, BBOX)}) as srv:
        osmnx_settings.nominatim_url = srv.url + "/nominatim/"
        yield srv


def fails_fast(query: dict, *words: str, limit_s: float = 5.0) -> str:
    start = time.monotonic()
    with pytest.raises(POIError) as err:
        fetch_pois(timeout=1, **query)
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert elapsed < limit_s, f"took {elapsed:.1f} s: {message}"
    for word in (*OFFLINE_WORDS, *words):
        assert word in message, message
    assert_plain_words(message)
    return message


def assert_plain_words(message: str) -> None:
    """Planners read these messages: no code paths, calls or OSM tag names (team issue 12, item 7)."""
    for jargon in ("trajmoe.", "()", "fclass", "helsinki_extract_path"):
        assert jargon not in message, message


FAULTS = {  # name -> (behaviour, words the message must contain)
    "never accepts": (None, "did not answer within 1 s"),
    "accepts, never answers": (silent, "did not answer within 1 s"),
    "connection reset": (reset, "could not be reached"),
    "body cut short": (cut_short, ""),
    "429 too many requests": (answer("429 Too Many Requests", b"slow down", "text/plain"), "429"),
    "504 gateway timeout": (answer("504 Gateway Timeout", b"<html>504</html>", "text/html"), "504"),
    "503 unavailable": (answer("503 Service Unavailable", b"busy", "text/plain"), "503"),
    "500 server error": (answer("500 Internal Server Error", b"oops", "text/plain"), "500"),
}


CASES = [("overpass", fault) for fault in FAULTS] + [
    ("nominatim", fault) for fault in ("never accepts", "connection reset", "429 too many requests", "500 server error")]


@pytest.mark.parametrize(("where", "fault"), CASES, ids=[f"{w}: {f}" for w, f in CASES])
def test_network_faults_fail_fast_naming_the_offline_options(osmnx_settings, where, fault):
    behaviour, words = FAULTS[fault]
    with RawServer(behaviour) as bad:
        if where == "overpass":
            osmnx_settings.overpass_url = bad.url + "/api"
            fails_fast({"bbox": BBOX}, words)
        else:
            osmnx_settings.nominatim_url = bad.url + "/nominatim/"
            fails_fast({"place": PLACE}, words)


def test_unreachable_host_and_closed_port(osmnx_settings):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    osmnx_settings.overpass_url = f"http://127.0.0.1:{port}/api"
    fails_fast({"bbox": BBOX}, "could not be reached")
    osmnx_settings.overpass_url = "http://overpass.invalid/api"  # a name that never resolves
    fails_fast({"bbox": BBOX}, "could not be reached")


def test_overpass_fault_after_a_working_geocoder(osmnx_settings, nominatim):
    with RawServer(answer("504 Gateway Timeout", b"", "text/plain")) as bad:
        osmnx_settings.overpass_url = bad.url + "/api"
        fails_fast({"place": PLACE}, "504")
    assert ("GET", "/nominatim/search") in nominatim.requests


def test_a_failed_fetch_leaves_no_lock_and_no_changed_settings(osmnx_settings, nominatim):
    before = {n: getattr(osmnx_settings, n) for n in ("requests_timeout", "requests_kwargs", "overpass_rate_limit")}
    with RawServer(None) as bad:
        osmnx_settings.overpass_url = bad.url + "/api"
        fails_fast({"bbox": BBOX})
    assert {n: getattr(osmnx_settings, n) for n in before} == before
    # the next fetch in another thread (an app session) is not blocked by the failed one
    osmnx_settings.overpass_url = nominatim.url + "/api"  # answers an empty, valid Overpass result
    done: list = []
    worker = threading.Thread(target=lambda: done.append(_try_fetch()), daemon=True)
    worker.start()
    worker.join(10)
    assert done and isinstance(done[0], POIError) and "no POIs" in str(done[0])


def _try_fetch():
    try:
        return fetch_pois(bbox=BBOX, timeout=1)
    except POIError as exc:
        return exc


BROKEN_ANSWERS = {  # a 200 OK that is not OpenStreetMap data: proxies, captive portals, bugs
    "not JSON": answer("200 OK", b"{not json"),
    "login page": answer("200 OK", b"<html><body>Log in to the hotel Wi-Fi</body></html>", "text/html"),
    "empty body": answer("200 OK", b""),
}


@pytest.mark.parametrize("broken", list(BROKEN_ANSWERS), ids=list(BROKEN_ANSWERS))
@pytest.mark.parametrize("where", ["overpass", "nominatim"])
def test_a_page_that_is_not_osm_data_is_named_a_network_fault(osmnx_settings, broken, where):
    with RawServer(BROKEN_ANSWERS[broken]) as bad:
        if where == "overpass":
            osmnx_settings.overpass_url = bad.url + "/api"
            fails_fast({"bbox": BBOX})
        else:
            osmnx_settings.nominatim_url = bad.url + "/nominatim/"
            fails_fast({"place": PLACE})


def test_a_trickling_server_is_given_up_on(osmnx_settings):
    with RawServer(trickle) as bad:
        osmnx_settings.overpass_url = bad.url + "/api"
        fails_fast({"bbox": BBOX}, limit_s=5)
