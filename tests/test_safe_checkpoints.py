"""Checkpoints load only as safetensors + JSON: pickles never run, broken or lying files are refused.

Every refusal is a CheckpointError that names the file; the CLI shows it as one line. The pickle
payloads here are live: a positive control in a subprocess shows that unpickling them does create
the marker file, and the test asserts that loading them through TrajMoE never does.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import random
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trajmoe import cli
from trajmoe.city.prepare import prepare
from trajmoe.errors import CheckpointError
from trajmoe.train.checkpoint import load_checkpoint, save_checkpoint
from trajmoe.train.models import new_model

REPO = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this runs ``open(marker, "w")``: proof that a loader executed pickled code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def good(tmp_path_factory, new_tiny) -> Path:
    """A valid tiny checkpoint pair (narrower than the shared tiny model: d=16, 2 experts)."""
    model, config = new_tiny(d_model=16, n_layers=1, expert_hidden=16, n_routed_experts=2, top_k=1)
    return save_checkpoint(tmp_path_factory.mktemp("good") / "good.safetensors", model, arch="trajmoe", config=config)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    """A small prepared city for the CLI's model verbs."""
    rows = [f"p{u},2021-03-{1 + v:02d}T{8 + v % 9:02d}:00:00,{60.15 + 0.004 * ((u * 7 + v * 3) % 11)},"
            f"{24.9 + 0.006 * ((u * 5 + v) % 13)}" for u in range(12) for v in range(15)]
    folder = tmp_path_factory.mktemp("city")
    (folder / "t.csv").write_text("user_id,timestamp,lat,lon\n" + "\n".join(rows) + "\n")
    prepare(folder / "t.csv", city="Testville", out=folder / "prepared")
    return folder / "prepared"


def sidecar(good: Path, **changes) -> dict:
    meta = json.loads(good.with_suffix(".json").read_text())
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


def write_pair(folder: Path, name: str, weights: bytes, meta: dict | None) -> Path:
    path = folder / name
    path.write_bytes(weights)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def header_of(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def with_header(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def refused(path: Path, match: str | None = None) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert path.stem in message, message  # the file is named
    if match:
        assert match in message, message
    return message


# --------------------------------------------------------------------------- pickles
def pickle_files(folder: Path, marker: Path, good: Path) -> dict[str, bytes]:
    """Live payloads in every form a pickle checkpoint comes in."""
    files = {f"protocol{p}": pickle.dumps(Payload(str(marker)), protocol=p) for p in range(6)}
    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(str(marker))}, buffer)
    files["torch.save zip"] = buffer.getvalue()
    buffer = io.BytesIO()
    torch.save({"extra": Payload(str(marker))}, buffer, _use_new_zipfile_serialization=False)
    files["torch.save legacy"] = buffer.getvalue()
    # a pickle with a valid-looking safetensors prefix in front cannot pass either
    files["pickle after a header"] = good.read_bytes()[:8] + files["protocol4"]
    return files


def test_the_payloads_are_live(tmp_path, good):
    """Positive control: unpickling these files DOES run code (so the next test means something)."""
    marker = tmp_path / "control-marker"
    files = pickle_files(tmp_path, marker, good)
    (tmp_path / "payload.pkl").write_bytes(files["protocol4"])
    (tmp_path / "payload.pt").write_bytes(files["torch.save zip"])
    script = ("import pickle, sys, torch\n"
              "sys.path.insert(0, sys.argv[3])\n"
              "from test_safe_checkpoints import Payload\n"
              "pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "torch.load(sys.argv[2], weights_only=False)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "payload.pkl"), str(tmp_path / "payload.pt"),
                    str(Path(__file__).parent)], check=True, timeout=120, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin", ".ckpt"])
def test_pickles_are_refused_and_never_executed(tmp_path, good, suffix):
    marker = tmp_path / "marker"
    for name, content in pickle_files(tmp_path, marker, good).items():
        stem = name.replace(" ", "_").replace(".", "_")
        for meta in (sidecar(good, sha256=None), None):  # with a plausible sidecar, and without
            path = write_pair(tmp_path, stem + suffix, content, meta)
            message = refused(path)
            if name.startswith("torch.save") or name in ("protocol2", "protocol3", "protocol4", "protocol5"):
                assert "pickle" in message and "never loads pickles" in message
            path.with_suffix(".json").unlink(missing_ok=True)
    assert not marker.exists()


def test_cli_refuses_a_pickle_with_one_line_and_runs_nothing(tmp_path, good, city):
    marker = tmp_path / "marker"
    payload = pickle_files(tmp_path, marker, good)["torch.save zip"]
    path = write_pair(tmp_path, "model.safetensors", payload, sidecar(good, sha256=None))
    for verb in (["evaluate", "--json", str(tmp_path / "m.json")], ["predict", "--out", str(tmp_path / "p.parquet")],
                 ["finetune", "--out", str(tmp_path / "ft.safetensors")]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([verb[0], "--checkpoint", str(path), "--data", str(city), *verb[1:]])
        assert code == 2
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "model.safetensors" in lines[0]
        assert "pickle" in lines[0]
    proc = subprocess.run([sys.executable, "-m", "trajmoe", "evaluate", "--checkpoint", str(path), "--data", str(city),
                           "--json", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "model.safetensors" in proc.stderr
    assert not marker.exists() and not (tmp_path / "m.json").exists()


# --------------------------------------------------------------------------- broken and lying files
def broken_weights(good: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (weights bytes, expected words); every sidecar here is the good one minus its checksum."""
    raw = good.read_bytes()
    header, data = header_of(raw)
    name = next(k for k in header if k != "__metadata__")
    entry = header[name]

    def lie(**fields) -> bytes:
        return with_header({**header, name: {**entry, **fields}}, data)

    other = {k: v for k, v in header.items() if k != name}
    return {
        "empty": (b"", "empty"),
        "seven bytes": (raw[:7], "truncated"),
        "header cut": (raw[:8 + 10], "bad header length"),
        "data cut": (raw[:len(raw) - 100], "truncated or lies"),
        "random": (random.Random(0).randbytes(4096), ""),
        "zeros": (bytes(4096), "bad header length"),
        "header length past the end": (struct.pack("<Q", len(raw)) + raw[8:], "bad header length"),
        "header length huge": (struct.pack("<Q", 2**63) + raw[8:], "bad header length"),
        "header not JSON": (struct.pack("<Q", 10) + b"\xff" * 10 + data, "corrupt"),
        "header a list": (with_header([1, 2], data), "corrupt"),  # type: ignore[arg-type]
        "offsets past the end": (lie(data_offsets=[0, len(data) + 4]), "lies about tensor"),
        "offsets not numbers": (lie(data_offsets=["0", "4"]), "lies about tensor"),
        "offsets negative": (lie(data_offsets=[-4, 0]), ""),
        "wrong dtype": (lie(dtype="F64"), ""),
        "unknown dtype": (lie(dtype="Q7"), ""),
        "shape vs config": (lie(shape=[3, 5]), "wrong shapes"),
        "missing tensor": (with_header(other, data), "missing tensors"),
        "extra tensor": (with_header({**header, "surprise.weight": entry}, data), "unexpected tensors"),
    }


BROKEN = ["empty", "seven bytes", "header cut", "data cut", "random", "zeros", "header length past the end",
          "header length huge", "header not JSON", "header a list", "offsets past the end", "offsets not numbers",
          "offsets negative", "wrong dtype", "unknown dtype", "shape vs config", "missing tensor", "extra tensor"]


@pytest.mark.parametrize("case", BROKEN)
def test_broken_or_lying_weights_are_refused(tmp_path, good, case):
    content, words = broken_weights(good)[case]
    refused(write_pair(tmp_path, case.replace(" ", "_") + ".safetensors", content, sidecar(good, sha256=None)), words)
    # with the checksum in the sidecar the same files are refused too (by the checksum or earlier)
    refused(write_pair(tmp_path, case.replace(" ", "_") + "_sha.safetensors", content, sidecar(good)))


def test_sidecar_problems_are_refused(tmp_path, good):
    raw = good.read_bytes()
    cases = {
        "no sidecar": (None, "sidecar"),
        "sidecar not JSON": ("{not json", "not valid JSON"),
        "sidecar a list": ([1, 2], "not a TrajMoE checkpoint sidecar"),
        "other format": (sidecar(good, format="someone-else"), "not a TrajMoE checkpoint sidecar"),
        "other schema": (sidecar(good, feature_schema="features-v0"), "feature schema"),
        "other model's checksum": (sidecar(good, sha256="0" * 64), "checksum"),
        "unknown arch": (sidecar(good, sha256=None, arch="llama"), "Unknown model architecture"),
        "config field unknown": (sidecar(good, sha256=None, config={**sidecar(good)["config"], "flux": 1}), "flux"),
        "config nonsense": (sidecar(good, sha256=None, config={**sidecar(good)["config"], "d_model": "wide"}), ""),
        "no config": (sidecar(good, sha256=None, config=None), ""),
    }
    for name, (meta, words) in cases.items():
        path = tmp_path / (name.replace(" ", "_").replace("'", "") + ".safetensors")
        path.write_bytes(raw)
        if meta is not None:
            path.with_suffix(".json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        refused(path, words)


def test_sidecar_of_another_model_is_refused(tmp_path, good, new_tiny):
    """A pair mixed up: the weights of one model next to the sidecar of another."""
    bigger, config = new_tiny(expert_hidden=32, n_routed_experts=2, top_k=1)
    other = save_checkpoint(tmp_path / "other.safetensors", bigger, arch="trajmoe", config=config)
    gru, gru_config = new_model("gru")
    gru_path = save_checkpoint(tmp_path / "gru.safetensors", gru, arch="gru", config=gru_config)
    for donor in (other, gru_path):
        meta = json.loads(donor.with_suffix(".json").read_text())
        refused(write_pair(tmp_path, f"mixed_{donor.stem}.safetensors", good.read_bytes(), meta), "checksum")
        meta.pop("sha256")
        refused(write_pair(tmp_path, f"mixed_{donor.stem}_nosha.safetensors", good.read_bytes(), meta),
                "does not fit its sidecar")


@pytest.mark.parametrize("config", [{"d_model": 4096, "n_layers": 4}, {"n_layers": 100_000}, {"max_len": 10**9}])
def test_a_sidecar_describing_a_huge_model_is_refused_at_once(tmp_path, good, config):
    """The loader compares shapes before allocating: this took 226 s and 20 GB before the fix."""
    meta = sidecar(good, sha256=None)
    meta["config"] = {**meta["config"], **config, "expert_hidden": 0}
    path = write_pair(tmp_path, "huge.safetensors", good.read_bytes(), meta)
    start = time.monotonic()
    refused(path)
    assert time.monotonic() - start < 5


def test_huge_domain_expert_list_is_refused_at_once(tmp_path, good):
    meta = sidecar(good, sha256=None, domain_experts=[f"city{i}" for i in range(100_000)])
    start = time.monotonic()
    refused(write_pair(tmp_path, "cities.safetensors", good.read_bytes(), meta))
    assert time.monotonic() - start < 5


def test_missing_paths_and_folders(tmp_path, good):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "folder.safetensors")
    model, meta = load_checkpoint(good)  # and the good pair still loads, also by its .json name
    assert meta["arch"] == "trajmoe" and load_checkpoint(good.with_suffix(".json"))[1] == meta


@st.composite
def mutated(draw, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "flip header", "insert", "cut"]))
        if action == "flip":
            data[at] = draw(st.integers(0, 255))
        elif action == "flip header":  # the first bytes are where a lie does harm
            data[draw(st.integers(0, min(len(data) - 1, 600)))] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[at:]
        if not data:
            break
    return bytes(data)


def test_mutated_checkpoints_load_or_are_refused_never_crash(tmp_path, good):
    raw, meta = good.read_bytes(), sidecar(good, sha256=None)
    path = write_pair(tmp_path, "mutant.safetensors", raw, meta)

    @settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(mutated(raw))
    def check(content):
        path.write_bytes(content)
        try:
            model, _ = load_checkpoint(path)  # a flip inside tensor data still loads: same shapes
        except CheckpointError as exc:
            assert "mutant.safetensors" in str(exc)
            return
        assert isinstance(model, torch.nn.Module)

    check()


def test_cli_evaluate_gives_one_line_for_every_broken_checkpoint(tmp_path, good, city):
    for case, (content, _) in broken_weights(good).items():
        path = write_pair(tmp_path, case.replace(" ", "_") + ".safetensors", content, sidecar(good, sha256=None))
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["evaluate", "--checkpoint", str(path), "--data", str(city), "--json", str(tmp_path / "m.json")])
        lines = err.getvalue().strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, err.getvalue())
        assert path.name in lines[0] and not out.getvalue()


def test_a_checkpoint_of_the_older_format_gets_one_line_naming_the_fix(tmp_path, new_tiny):
    model, config = new_tiny(d_model=16, n_layers=1)
    path = save_checkpoint(tmp_path / "old.safetensors", model, arch="trajmoe", config=config)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["format_version"] = 1  # absolute positions, one window per target: cannot be read any more
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"format 1.*regenerate") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    proc = subprocess.run([sys.executable, "-m", "trajmoe", "evaluate", "--checkpoint", str(path), "--data",
                           str(tmp_path), "--json", str(tmp_path / "m.json")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "regenerate" in proc.stderr
