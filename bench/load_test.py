"""Several planners on one app server at once: each uploads a real city, fine-tunes and opens Flows.

    python bench/load_test.py                 # 3 planners; writes bench/results/load_test.md and .json
    python bench/load_test.py --sessions 5 --checkpoint X.safetensors

Bounded and loopback only: one ``streamlit run`` on 127.0.0.1 (a free port, a fresh temporary
``TRAJMOE_APP_DIR``, removed afterwards), at most :data:`MAX_SESSIONS` browser contexts of one
headless Chromium, every request to another host refused and counted, and a deadline for the
whole run (``--timeout``). Each planner, at the same time as the others (Playwright's async API):

1. opens the app and waits until its first page is drawn and its run has ended;
2. uploads the trajectory file on Trajectories and waits for its check and map;
3. fine-tunes with the app's defaults (5%, 1 epoch) until the before/after table is shown;
4. opens Flows and waits until the fine-tuned model's map is drawn.

The file: ~120 of the busiest people of the first 60,000 rows of the real Los Angeles Gowalla
check-ins (``../shared/data/cities/la_gowalla.csv.gz``, as in tests/test_browser_session.py), each
planner's with its own name (so no two share an upload); the Helsinki sample's first 80 people
when the real data is not there. Reported: per planner and step the seconds, errors (an exception
on the page or a step that timed out), the server's peak resident memory (psutil if installed,
else /proc/<pid>/status, sampled every 0.2 s) and the work folder's size on disk at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root

from bench.streamlit_server import (  # noqa: E402
    CHROMIUM,
    DONE,
    FLAGS,
    MAP,
    start_server,
    stop_server,
)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "load_test"
MAX_SESSIONS = 8  # the machine is small: more browsers than this measure the browsers, not the server
STEPS = ("open", "upload", "fine-tune", "flows")
LOCAL = ("127.0.0.1", "localhost")


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (psutil if installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS(threading.Thread):
    """Samples a process's resident memory every 0.2 s; ``peak`` and ``start`` in bytes."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.start_rss, self.halt = pid, 0, rss_bytes(pid), threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, ValueError):
                return
            time.sleep(0.2)


def upload_files(folder: Path, n: int) -> tuple[list[Path], str]:
    """One file per planner (same rows, own name) and what they are, in words."""
    import pandas as pd

    from trajmoe.devtools.realdata import shared_data_dir

    data = shared_data_dir()
    la = data / "cities" / "la_gowalla.csv.gz" if data else None
    if la is not None and la.is_file():
        frame = pd.read_csv(la, nrows=60_000)
        frame = frame[frame["user_id"].isin(frame["user_id"].value_counts().index[:120])]
        what = f"real Los Angeles Gowalla check-ins: {len(frame):,} rows of the 120 busiest people of the first 60,000"
        stem = "la_gowalla"
    else:
        frame = pd.read_csv(REPO / "sample_data" / "helsinki_synthetic_trajectories.csv.gz")
        frame = frame[frame["user_id"].isin(frame["user_id"].unique()[:80])]
        what = f"the Helsinki sample (synthetic): {len(frame):,} rows of its first 80 people (real data not found)"
        stem = "helsinki_sample"
    paths = []
    for i in range(n):
        path = folder / f"{stem}_planner_{i + 1}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths, what


async def planner(browser, url: str, path: Path, outside: list[str], step_timeout_ms: int) -> dict:
    """One planner's four steps, timed; stops at the first step that fails."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1600})

    async def refuse_outside(route):
        outside.append(route.request.url)
        await route.abort()

    await context.route(lambda u: urlparse(u).hostname not in LOCAL, refuse_outside)
    page = await context.new_page()
    nav = page.locator("[data-testid=stSidebarNav] a")
    times: dict[str, float] = {}
    error = None

    async def idle() -> None:
        await page.wait_for_timeout(300)
        await page.wait_for_selector(DONE, state="detached", timeout=step_timeout_ms)

    async def step(name: str, action) -> None:
        t = time.perf_counter()
        await action()
        times[name] = round(time.perf_counter() - t, 2)
        if await page.locator("[data-testid=stException]").count():
            raise RuntimeError(f"an exception is shown on the page after '{name}'")

    async def open_app():
        await page.goto(url)
        await page.wait_for_selector(MAP, timeout=step_timeout_ms)
        await idle()

    async def upload():
        await nav.filter(has_text="Trajectories").click()
        await page.get_by_role("heading", level=1).filter(has_text="Trajectories").wait_for(timeout=step_timeout_ms)
        await idle()
        await page.locator(".st-key-traj_upload input[type=file]").set_input_files(str(path))
        await page.get_by_role("heading").filter(has_text=f"{path.name} (uploaded)").wait_for(timeout=step_timeout_ms)
        await page.get_by_text("Where the visits are").wait_for(timeout=step_timeout_ms)
        await idle()

    async def finetune():
        await nav.filter(has_text="Fine-tune").click()
        await page.get_by_text("Not fine-tuned yet").wait_for(timeout=step_timeout_ms)
        await idle()
        await page.locator(".st-key-ft_run button").click()
        await page.get_by_text("How often each model guesses").wait_for(timeout=step_timeout_ms)
        await idle()  # another click while the run goes on would stop the fine-tune

    async def flows():
        await nav.filter(has_text="Flows").click()
        await page.get_by_test_id("stAlertContentInfo").filter(has_text="your model fine-tuned on").wait_for(
            timeout=step_timeout_ms)
        await page.wait_for_selector(MAP, timeout=step_timeout_ms)
        await idle()

    start = time.perf_counter()
    try:
        for name, action in zip(STEPS, (open_app, upload, finetune, flows)):
            await step(name, action)
    except Exception as exc:  # noqa: BLE001  (reported in the table, the others go on)
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    total = round(time.perf_counter() - start, 2)
    await context.close()
    return {"file": path.name, "times": times, "total": total, "error": error}


async def run_planners(url: str, paths: list[Path], step_timeout_ms: int) -> tuple[list[dict], list[str]]:
    from playwright.async_api import async_playwright

    outside: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        results = await asyncio.gather(*(planner(browser, url, path, outside, step_timeout_ms) for path in paths))
        await browser.close()
    return list(results), outside


def disk_usage(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def report(result: dict) -> str:
    mb = 1024 * 1024
    lines = [
        f"# Load test: {result['sessions']} planners at once on one app server",
        "",
        f"Measured {result['date']} on this machine ({result['cores']} cores, {result['machine']}, Python "
        f"{result['python']}), load average {result['load_before']} before the run. Command: "
        f"`{result['command']}`. Checkpoint: `{result['checkpoint']}`. Each planner uploads "
        f"{result['upload']} (its own copy), fine-tunes with the app's defaults (5%, 1 epoch) and opens Flows, "
        "all at the same time in one headless Chromium (one browser context each); seconds from the step's "
        "first click until its page is drawn and its run has ended.",
        "",
        "| planner | " + " | ".join(f"{s} s" for s in STEPS) + " | total s | error |",
        "|---|" + "---|" * (len(STEPS) + 2),
    ]
    for i, r in enumerate(result["planners"], 1):
        cells = [f"{r['times'][s]:.1f}" if s in r["times"] else "-" for s in STEPS]
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {r['total']:.1f} | {r['error'] or 'none'} |")
    lines += [
        "",
        f"- All {result['sessions']} finished in {result['wall_s']:.1f} s; errors: {result['n_errors']}.",
        f"- Server resident memory: {result['rss_start'] / mb:,.0f} MB when started, peak "
        f"{result['rss_peak'] / mb:,.0f} MB ({result['rss_method']}, sampled every 0.2 s).",
        f"- Work folder on disk at the end: {result['disk'] / mb:,.1f} MB "
        f"({result['session_folders']} session folders).",
        f"- Requests to other hosts refused: {len(result['outside'])}.",
        "",
        "Re-run: `python bench/load_test.py` (needs Chromium: apt-get install -y chromium); "
        "`--sessions N` (at most 8), `--checkpoint X.safetensors`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=3, help=f"planners at once (1 to {MAX_SESSIONS})")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to start from (default: the shipped one)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds the whole run may take")
    parser.add_argument("--out", type=Path, default=OUT, help="report path without suffix (.md and .json)")
    args = parser.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        parser.error(f"--sessions must be from 1 to {MAX_SESSIONS}")
    shipped = REPO / "assets" / "trajmoe_pretrained.safetensors"
    checkpoint = args.checkpoint or shipped
    if not checkpoint.is_file():
        parser.error(f"no checkpoint: {checkpoint.name} not found (give --checkpoint)")

    work = Path(tempfile.mkdtemp(prefix="trajmoe_load_"))
    try:
        paths, what = upload_files(work, args.sessions)
        env = {**os.environ, "TRAJMOE_APP_DIR": str(work / "app"), "TRAJMOE_CHECKPOINT": str(checkpoint.resolve())}
        load_before = os.getloadavg()[0]
        proc, url = start_server(env)
        sampler = PeakRSS(proc.pid)
        sampler.start()
        try:
            t = time.perf_counter()
            planners, outside = asyncio.run(asyncio.wait_for(
                run_planners(url, paths, step_timeout_ms=args.timeout * 1000), timeout=args.timeout))
            wall = time.perf_counter() - t
        finally:
            sampler.halt.set()
            stop_server(proc)
        try:
            import psutil  # noqa: F401

            method = "psutil"
        except ImportError:
            method = "/proc/<pid>/status VmRSS"
        sessions = work / "app" / "sessions"
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cores": os.cpu_count(),
            "machine": platform.machine(), "python": platform.python_version(), "load_before": round(load_before, 1),
            "command": "python bench/load_test.py" + (f" --sessions {args.sessions}" if args.sessions != 3 else ""),
            "checkpoint": checkpoint.name, "upload": what, "sessions": args.sessions, "planners": planners,
            "wall_s": round(wall, 2), "n_errors": sum(bool(p["error"]) for p in planners),
            "rss_start": sampler.start_rss, "rss_peak": sampler.peak, "rss_method": method,
            "disk": disk_usage(work / "app"),
            "session_folders": len(list(sessions.iterdir())) if sessions.is_dir() else 0, "outside": outside,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 1 if result["n_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
