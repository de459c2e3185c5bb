"""How fast the app feels, measured in a real browser on the embedded Helsinki default (and a real upload).

    python bench/app_speed.py                      # writes bench/results/app_speed.md
    python bench/app_speed.py --checkpoint X.safetensors

1. Cold start: from launching ``streamlit run`` (empty caches, fresh work folder) until the first
   page is interactive (its POI map drawn, as in 3).                            Goal <= 8 s.
2. Fine-tune on the embedded default with the app's defaults (5%, 1 epoch), from the click until
   the before/after table is on screen (training, predictions for every visit, the zero-shot,
   Markov and return + gravity scores).                                          Goal <= 15 s.
3. Page switch once cached: click a page in the sidebar until its maps are drawn (deck.gl has
   issued its draw calls on each new map, or again on the map the browser kept, and the software
   GPU has finished them) and the script run has ended.                           Goal <= 1 s.
4. Upload, fine-tune, maps: the real Los Angeles file (../shared/data/cities/la_gowalla.csv.gz) is
   uploaded on Trajectories and prepared (not timed); then from the click on Fine-tune (5%, 1 epoch)
   until the fine-tune has finished and, after a click on Flows, its map is drawn and the
   script run has ended.                                                          Goal <= 5 s.
   Skipped (with a line saying why) when ../shared/data is not there.

Uses the shipped checkpoint (assets/trajmoe_pretrained.safetensors) unless --checkpoint is given;
when neither exists, an untrained TrajMoE of the default size (same compute) stands in and the
report says so. Needs Chromium (apt-get install -y chromium).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tools/ is not installed

from bench.streamlit_server import (  # noqa: E402
    CHROMIUM,
    DONE,
    FLAGS,
    MAP,
    REPO,
    start_server,
    stop_server,
)

OUT = REPO / "bench" / "results" / "app_speed.md"
GOALS = {"cold start": 8.0, "fine-tune": 15.0, "page switch": 1.0, "upload fine-tune to maps": 5.0}
LA_FILE = "cities/la_gowalla.csv.gz"  # under tools.realdata.shared_data_dir()


def stand_in_checkpoint(folder: Path) -> Path:
    from trajmoe.train.checkpoint import save_checkpoint
    from trajmoe.train.models import new_trajmoe

    model, config = new_trajmoe(seed=0)
    return save_checkpoint(folder / "untrained_default_size.safetensors", model, arch="trajmoe", config=config,
                           info={"cities": ["(untrained stand-in)"]})


# Counts each WebGL draw call on its canvas: a canvas is in the page before deck.gl has drawn
# anything on it (Streamlit first renders a map with no layers), so its presence says nothing.
COUNT_DRAWS = """(() => {
  for (const P of [WebGLRenderingContext.prototype, WebGL2RenderingContext.prototype]) {
    for (const name of ['drawArrays', 'drawElements', 'drawArraysInstanced', 'drawElementsInstanced', 'drawRangeElements']) {
      const f = P[name];
      if (f) P[name] = function (...args) { this.canvas.__draws = (this.canvas.__draws || 0) + 1; this.canvas.__gl = this; return f.apply(this, args); };
    }
  }
})();"""


def mark_maps_old(page) -> None:
    """Before a click: the maps now on screen belong to the page being left (with their draw counts:
    the analysis pages' map is kept by the browser and drawn again with the new page's layers)."""
    page.evaluate(f"() => document.querySelectorAll('{MAP}').forEach(c => {{ c.__old = true; c.__before = c.__draws || 0; }})")


def maps_drawn(page, n: int, timeout_ms: int) -> None:
    """Wait until ``n`` maps have drawn since :func:`mark_maps_old` (made since, or kept and drawn
    again) and the (software) GPU has finished drawing them: a 1-pixel read of each waits for its
    queued work, as the compositor's own read of the canvas does before the map is on screen."""
    # Poll on a timer: the default (every animation frame) keeps Chromium repainting the maps.
    page.wait_for_function(f"""() => {{ const maps = [...document.querySelectorAll('{MAP}')];
        const drawn = maps.filter(c => c.__old ? c.__draws > c.__before : c.__draws > 0);
        return drawn.length >= {n} && maps.filter(c => !c.__old).every(c => c.__draws > 0); }}""",
                           timeout=timeout_ms, polling=50)
    # A kept map may draw before the new page's layers reach it (a resize): wait for the run to
    # end (its last map sent; the run may also go on after its maps: captions, tables), then two
    # animation frames, in which deck.gl draws what it got.
    page.wait_for_selector(DONE, state="detached", timeout=timeout_ms)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    finish_drawing(page)


def finish_drawing(page) -> None:
    """Read 1 pixel of each map on screen: it returns when the software GPU has done that map's
    queued drawing."""
    page.evaluate(f"""() => document.querySelectorAll('{MAP}').forEach(c => {{ if (c.__gl)
        c.__gl.readPixels(0, 0, 1, 1, c.__gl.RGBA, c.__gl.UNSIGNED_BYTE, new Uint8Array(4)); }})""")


KEPT: list[bool] = []  # per timed switch to a page with one map: did the browser keep the map?


def note_kept(page) -> None:
    """After :func:`maps_drawn`: whether the map on screen is the one from before the click."""
    KEPT.append(page.evaluate(f"() => [...document.querySelectorAll('{MAP}')].some(c => c.__old)"))


def flows_choices(page, nav, rounds: int) -> dict[str, list[float]]:
    """On Flows: the "Show" switch from Observed to Predicted (the same map, its layers redrawn)
    and to "Both, side by side" (two maps drawn), each timed until drawn and the run has ended."""
    mark_maps_old(page)
    nav.filter(has_text="Flows").click()
    page.get_by_role("heading", level=1).filter(has_text="Flows").wait_for(timeout=120_000)
    maps_drawn(page, 1, 120_000)
    choice = page.locator(".st-key-fl_compare")
    out: dict[str, list[float]] = {"Observed -> Predicted (one map redrawn)": [], "-> Both, side by side (two maps)": []}
    for _ in range(rounds):
        mark_maps_old(page)
        t = time.perf_counter()
        choice.get_by_text("Predicted", exact=True).click()
        maps_drawn(page, 1, 60_000)
        out["Observed -> Predicted (one map redrawn)"].append(time.perf_counter() - t)
        note_kept(page)
        mark_maps_old(page)
        t = time.perf_counter()
        choice.get_by_text("Both, side by side", exact=True).click()
        maps_drawn(page, 2, 60_000)
        out["-> Both, side by side (two maps)"].append(time.perf_counter() - t)
        mark_maps_old(page)
        choice.get_by_text("Observed", exact=True).click()
        maps_drawn(page, 1, 60_000)
    return out


# Logs each change of the progress bars' texts (numbers dropped) with its time, to say where the
# fine-tune's seconds go: "Fine-tuning", "Predicting where each person goes next", the baselines.
WATCH_PROGRESS = """() => {
  window.__phases = [[performance.now(), ""]];
  window.__watch = setInterval(() => {
    const now = [...document.querySelectorAll('[data-testid=stProgress]')]
      .map(e => e.innerText.replace(/: (step )?[\\d,]+ of .*$/s, '').replace(/\\.\\.\\.$/, '').trim()).join(' + ');
    if (now !== window.__phases[window.__phases.length - 1][1]) window.__phases.push([performance.now(), now]);
  }, 50);
}"""


def machine_seconds() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (best of 3): a rough gauge of the
    CPU beside the app's numbers (a short burst: it does not see a machine that slows down under
    minutes of load)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - t)
    return best


# A fixed browser job: 6 new WebGL contexts, each compiling one small shader pair and drawing one
# triangle, read back. It gauges the software GPU and the CPUs as the browser sees them, which the
# Python loop does not (this machine's speed drifts over minutes).
WEBGL_GAUGE = """() => {
  const t0 = performance.now();
  for (let i = 0; i < 6; i++) {
    const c = document.createElement('canvas'); c.width = 800; c.height = 600;
    const gl = c.getContext('webgl2');
    const shader = (type, src) => { const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s); return s; };
    const p = gl.createProgram();
    gl.attachShader(p, shader(gl.VERTEX_SHADER, `#version 300 es
      in vec2 xy; uniform float k${i}; void main() { gl_Position = vec4(xy * k${i}, 0., 1.); }`));
    gl.attachShader(p, shader(gl.FRAGMENT_SHADER, `#version 300 es
      precision highp float; out vec4 o; void main() { o = vec4(1., 0., 0., 1.); }`));
    gl.linkProgram(p); gl.useProgram(p); gl.uniform1f(gl.getUniformLocation(p, 'k' + i), 1.0);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([0, 0, 1, 0, 0, 1]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0); gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, new Uint8Array(4));
    gl.getExtension('WEBGL_lose_context').loseContext();
  }
  return performance.now() - t0;
}"""


def webgl_gauge(browser) -> float:
    """Milliseconds of :data:`WEBGL_GAUGE` in a blank page (best of 3)."""
    page = browser.new_page()
    try:
        return min(page.evaluate(WEBGL_GAUGE) for _ in range(3))
    finally:
        page.close()


def phases(page) -> dict[str, float]:
    """Seconds each progress text was on screen since WATCH_PROGRESS ("" = none), up to now."""
    marks = page.evaluate("() => { clearInterval(window.__watch); return [...window.__phases, [performance.now(), null]]; }")
    out: dict[str, float] = {}
    for (t0, text), (t1, _) in zip(marks, marks[1:]):
        out[text] = out.get(text, 0.0) + (t1 - t0) / 1000
    return out


def la_file() -> tuple[Path | None, str]:
    """The real Los Angeles check-ins, or None and why not."""
    from tools.realdata import shared_data_dir

    data = shared_data_dir()
    if data is None:
        return None, "../shared/data (or $TRAJMOE_SHARED_DATA) with its MANIFEST.md not found"
    path = data / LA_FILE
    return (path, "") if path.is_file() else (None, f"{path} not found")


def upload_finetune_to_maps(page, nav, path: Path) -> dict:
    """Measure 4: upload ``path`` on Trajectories and wait until it is checked and prepared (not
    timed), then time the Fine-tune click -> fine-tune done -> Flows clicked -> its map drawn
    and the run ended. Returns the span and its parts."""
    nav.filter(has_text="Trajectories").click()
    page.get_by_role("heading", level=1).filter(has_text="Trajectories").wait_for(timeout=120_000)
    page.wait_for_selector(DONE, state="detached", timeout=300_000)
    page.locator(".st-key-traj_upload input[type=file]").set_input_files(str(path))
    # The file's own report and map: the check and the preparation are done.
    page.get_by_role("heading").filter(has_text=f"{path.name} (uploaded)").wait_for(timeout=600_000)
    page.get_by_text("Where the visits are").wait_for(timeout=600_000)
    maps_drawn(page, 1, 300_000)
    rows_used = page.locator("[data-testid=stMetric]").filter(has_text="Rows used") \
        .locator("[data-testid=stMetricValue]").inner_text()

    nav.filter(has_text="Fine-tune").click()
    page.get_by_role("heading", level=1).filter(has_text="Fine-tune").wait_for(timeout=120_000)
    page.get_by_text("Not fine-tuned yet").wait_for(timeout=300_000)  # this city, not the Helsinki tune
    page.wait_for_selector(DONE, state="detached", timeout=300_000)
    button = page.locator(".st-key-ft_run button")
    label = button.inner_text()
    page.evaluate(WATCH_PROGRESS)
    t = time.perf_counter()
    button.click()
    page.get_by_text("How often each model guesses").wait_for(timeout=600_000)
    finetuned = time.perf_counter() - t
    bars = phases(page)
    done = page.get_by_text("training steps in").inner_text()  # "Done: N training steps in X s. ..."
    # Clicking another page while the script runs would stop the fine-tune: let its run end first.
    page.wait_for_selector(DONE, state="detached", timeout=300_000)
    ended = time.perf_counter() - t
    mark_maps_old(page)
    nav.filter(has_text="Flows").click()
    page.get_by_role("heading", level=1).filter(has_text="Flows").wait_for(timeout=300_000)
    page.get_by_test_id("stAlertContentInfo").filter(has_text="your model fine-tuned on").wait_for(
        timeout=300_000)  # the page shows the fine-tuned model
    maps_drawn(page, 1, 300_000)
    total = time.perf_counter() - t
    train = re.search(r"(\d[\d,]*) training steps in ([\d.]+) s", done)
    return {"total": total, "finetuned": finetuned, "ended": ended, "flows": total - ended, "label": label,
            "rows": rows_used, "bars": bars, "steps": int(train[1].replace(",", "")) if train else None,
            "train_s": float(train[2]) if train else None}


def server_switch_times(env: dict, rounds: int) -> list[float]:
    """The server's share of a page switch: the script run alone (streamlit.testing AppTest, same
    checkpoint and work folder, caches filled first), without the browser's drawing."""
    os.environ.update({k: env[k] for k in ("TRAJMOE_APP_DIR", "TRAJMOE_CHECKPOINT")})
    sys.path.insert(0, str(REPO / "app"))
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app" / "streamlit_app.py"), default_timeout=600).run()
    pages = ["flows", "experts", "scenario"]
    for name in ["trajectories", *pages]:
        at.switch_page(f"app_pages/{name}.py").run()
    times = []
    for _ in range(rounds):
        for name in pages:
            t = time.perf_counter()
            at.switch_page(f"app_pages/{name}.py").run()
            times.append(time.perf_counter() - t)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to start from (default: the shipped one)")
    parser.add_argument("--switches", type=int, default=3, help="rounds of page switches to time")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    calibration = machine_seconds()
    work = Path(tempfile.mkdtemp(prefix="trajmoe_bench_"))
    shipped = REPO / "assets" / "trajmoe_pretrained.safetensors"
    checkpoint = args.checkpoint or (shipped if shipped.is_file() else stand_in_checkpoint(work))
    env = {**os.environ, "TRAJMOE_APP_DIR": str(work / "app"), "TRAJMOE_CHECKPOINT": str(checkpoint)}
    results: dict[str, float] = {}
    switch_times: list[float] = []
    upload: dict = {}
    why = ""
    heading_times: list[float] = []
    choices: dict[str, list[float]] = {}
    by_page: dict[str, list[float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        gauges = [webgl_gauge(browser)]
        page = browser.new_page(viewport={"width": 1500, "height": 2000})
        page.add_init_script(COUNT_DRAWS)
        start = time.perf_counter()
        proc, url = start_server(env, poll_s=0.05)  # the cold start counts the server's start too
        try:
            page.goto(url)
            maps_drawn(page, 1, 120_000)
            results["cold start"] = time.perf_counter() - start

            nav = page.locator("[data-testid=stSidebarNav] a")
            mark_maps_old(page)
            nav.filter(has_text="Trajectories").click()
            page.get_by_text("Where the visits are").wait_for(timeout=300_000)  # the sample is prepared
            maps_drawn(page, 1, 300_000)
            nav.filter(has_text="Fine-tune").click()
            button = page.get_by_role("button", name="Fine-tune on 5% of Helsinki")
            button.wait_for(timeout=120_000)
            t = time.perf_counter()
            button.click()
            page.get_by_text("How often each model guesses").wait_for(timeout=600_000)
            results["fine-tune"] = time.perf_counter() - t
            page.wait_for_selector(DONE, state="detached", timeout=300_000)

            pages = [("Flows", 1), ("Experts", 1), ("Scenario", 1)]  # Flows: one map (Observed) by default
            for title, n in pages:  # first visits fill the caches (scenario: two model passes)
                mark_maps_old(page)
                nav.filter(has_text=title).click()
                page.get_by_role("heading", level=1).filter(has_text=title.split()[0]).wait_for(timeout=300_000)
                maps_drawn(page, n, 300_000)  # also waits for the run to end
            for _ in range(args.switches):
                for title, n in pages:
                    mark_maps_old(page)
                    t = time.perf_counter()
                    nav.filter(has_text=title).click()
                    page.get_by_role("heading", level=1).filter(has_text=title.split()[0]).wait_for(timeout=60_000)
                    heading_times.append(time.perf_counter() - t)
                    maps_drawn(page, n, 60_000)
                    switch_times.append(time.perf_counter() - t)
                    note_kept(page)
                    by_page.setdefault(title, []).append(switch_times[-1])
            results["page switch"] = statistics.median(switch_times)
            choices = flows_choices(page, nav, args.switches)

            la, why = la_file()
            if la is None:
                print(f"upload fine-tune to maps: skipped ({why})")
            else:
                upload = upload_finetune_to_maps(page, nav, la)
                results["upload fine-tune to maps"] = upload["total"]
                print(f"upload fine-tune to maps s: {upload['total']:.2f}")
            gauges.append(webgl_gauge(browser))
        finally:
            stop_server(proc)
            browser.close()

    server_times = server_switch_times(env, args.switches)
    load = os.getloadavg()
    model_note = ("the shipped checkpoint" if checkpoint == shipped else
                  "an UNTRAINED stand-in of the default size (no shipped checkpoint yet)"
                  if checkpoint.name.startswith("untrained") else f"`{checkpoint}`")
    lines = [
        "# App speed (bench/app_speed.py)",
        "",
        f"Embedded Helsinki default (measure 4: the real Los Angeles upload), {model_note}; "
        "Chromium headless on 127.0.0.1; "
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"load average after the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min; other jobs share the machine); "
        f"a 5-million-step Python loop took {calibration:.2f} s before the run (a rough gauge of the CPU's "
        "speed; it does not see a machine slowed down over minutes of load); a fixed WebGL job in the browser "
        f"(6 new contexts, one small shader and one triangle each) took {' ms before, '.join(f'{g:.0f}' for g in gauges)} ms "
        f"{'after' if len(gauges) > 1 else 'before'} the run.",
        "",
        "| measure | seconds | goal | |",
        "|---|---:|---:|---|",
    ]
    for name, goal in GOALS.items():
        if name not in results:
            lines.append(f"| {name} | skipped | <= {goal:g} | {why} |")
            continue
        value = results[name]
        lines.append(f"| {name} | {value:.2f} | <= {goal:g} | {'ok' if value <= goal else 'OVER'} |")
    lines += [
        "",
        "- cold start: `streamlit run` launched -> first page's POI map drawn and finished by the software GPU (empty caches).",
        "- fine-tune: click -> results table shown (5% of the training windows, 1 epoch; then predictions for",
        "  every visit from one pass per person for the fine-tuned model, the same for the zero-shot model, Markov",
        "  and return + gravity baselines).",
        f"- page switch: median of {len(switch_times)} sidebar clicks among Flows, Experts, Scenario after caching "
        f"(min {min(switch_times):.2f} s, max {max(switch_times):.2f} s), until every map of the new page has drawn",
        "  its layers (Flows, Experts and Scenario share one map, which the browser keeps and draws again) and the software GPU has finished them (WebGL draw calls counted per canvas, then a 1-pixel read",
        f"  of each, which waits for its queued drawing) and the script has finished; the page title shows after {statistics.median(heading_times):.2f} s (median).",
        "  Median by page: " + ", ".join(f"{title} {statistics.median(by_page[title]):.2f} s ({n} map{'s' if n > 1 else ''})"
                                      for title, n in pages) + ".",
        f"- of which the server's script run (AppTest, no browser): median {statistics.median(server_times):.2f} s "
        f"(max {max(server_times):.2f} s); the rest is Chromium drawing the maps and charts with software WebGL",
        "  (no GPU here) while sharing the CPUs.",
        "- Flows' \"Show\" switch, on the page (median of " + str(args.switches) + "): " + "; ".join(
            f"{what} {statistics.median(times):.2f} s" for what, times in choices.items()) + ".",
        f"- The browser kept the map (the same canvas, its layers redrawn) in {sum(KEPT)} of {len(KEPT)} timed switches "
        "between the analysis pages and from Observed to Predicted; otherwise it made the map anew.",
    ]
    if upload:
        train = (f"; the app reports {upload['steps']:,} training steps in {upload['train_s']:.1f} s"
                 if upload["steps"] is not None else "")
        lines += [
            f"- upload fine-tune to maps: `{LA_FILE.split('/')[-1]}` (the real Los Angeles Gowalla check-ins, "
            f"{upload['rows']} rows used) uploaded on Trajectories and prepared first (check, map grid, features:",
            f"  not timed). Timed from the click on \"{upload['label']}\" (app defaults: 5%, 1 epoch, full) until the",
            "  Flows page shows its map (observed; the fine-tuned model's info line) drawn and Streamlit's status",
            "  widget is gone. It covers: training, predictions for every visit from one pass per person (fine-tuned",
            "  and zero-shot), the Markov and return + gravity baselines, the results table "
            f"(shown after {upload['finetuned']:.2f} s{train}),",
            f"  the end of that run ({upload['ended']:.2f} s), then the Flows page's first run for the fine-tuned model "
            f"(flows from the predictions, maps drawn by Chromium: {upload['flows']:.2f} s).",
            "  Progress bars on screen until the table (the two prediction passes show one text): " + "; ".join(
                f"\"{text or '(none: loading, tables, the switch between steps)'}\" {sec:.2f} s"
                for text, sec in upload["bars"].items()) + ".",
        ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
