"""The one object a planner's session keeps: what they chose and what they made.

Everything the app itself remembers between reruns lives in one :class:`Session`, stored under
one key of ``st.session_state``; widget values stay under their widget keys (Streamlit owns
those). Another session never sees this object, so uploads and fine-tuned models stay private to
the planner who made them (tests/test_isolation.py). A refresh starts a new Streamlit session:
:mod:`state.saved` writes the settings (:meth:`Session.to_record`) next to the session's files
under its link's token and reads them back.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from types import MappingProxyType

import streamlit as st

from trajmoe.analysis.privacy import DEFAULT_K, check_k

KEY = "trajmoe"  # the session's one key in st.session_state
PRIVACY_K = "privacy_k"  # the sidebar slider's widget key (its value: the privacy threshold k)


def new_token() -> str:
    """A link token nobody can guess (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Source:
    """An input file: bundled or uploaded (written to disk once, named by its content digest)."""

    label: str  # plain words for planners
    path: str
    key: str  # content digest: the cache key


@dataclass
class Finetuned:
    """A model this session fine-tuned: its own copy, its predictions and its downloads.

    Restored after a refresh, ``model`` and ``outputs`` are None until a page needs them
    (state.predictions.finetuned_for loads the saved weights and predicts again)."""

    folder: str  # the prepared city it was tuned on (shown only while that city is)
    model: object  # the tuned deep copy (torch.nn.Module); the shared pretrained model is untouched
    outputs: object  # trajmoe.analysis.predict.Predictions over every visit
    fraction: float  # few-shot share it learnt from (its training visits give the cell features)
    metrics: dict  # "zero-shot", "fine-tuned", "markov", "epr" -> test metrics
    files: dict  # "safetensors", "json" -> bytes of the downloads
    label: str  # plain words: "your model fine-tuned on 5% of ..."
    steps: int
    seconds: float
    key: str  # identifies model + city for caches
    verdict: str = ""  # which state fine-tuning kept and how sure (trajmoe.train.keep.Verdict.in_plain_words)

    RECORD = ("folder", "fraction", "metrics", "label", "steps", "seconds", "key", "verdict")  # kept across a refresh


@dataclass(frozen=True)
class FinetuneSettings:
    """The Fine-tune page's choices, kept across pages, refreshes and in the project file."""

    share: int = 5  # percent of the city's training data (the paper's few-shot 5%)
    epochs: int = 1
    max_steps: int = 0  # 0 = no limit
    light: bool = False  # train only the city's expert, the routers and the output

    def __post_init__(self) -> None:
        for name, lo, hi in (("share", 1, 100), ("epochs", 1, 10), ("max_steps", 0, 100_000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"fine-tuning {name} must be a whole number from {lo} to {hi}, got {value!r}")
        if not isinstance(self.light, bool):
            raise ValueError(f"fine-tuning 'light' must be true or false, got {self.light!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Session:
    """What one session keeps between reruns (None: the default)."""

    token: str = field(default_factory=new_token)  # the link's key to this session's files (state.saved)
    trajectories: Source | None = None  # None = the bundled Helsinki sample
    pois: Source | None = None  # None = the bundled Helsinki centre POIs
    city: str | None = None  # None = "Helsinki"
    resolution: int | None = None  # H3 resolution asked for; None = prepare's automatic choice
    weekday_unreliable: bool = False  # the file's weekdays are shifted: use the hour only
    base_checkpoint: str | None = None  # an uploaded checkpoint to start from (weights path)
    finetuned: Finetuned | None = None
    finetune_settings: FinetuneSettings = field(default_factory=FinetuneSettings)
    uploads: dict[str, Source] = field(default_factory=dict)  # uploader file_id -> the file written
    applied_uploads: dict[str, str] = field(default_factory=dict)  # "trajectories"/"pois" -> file_id used
    scenarios: dict[tuple, object] = field(default_factory=dict)  # (model key, edits) -> ScenarioResult
    project_todo: list[str] = field(default_factory=list)  # what loading a project file left to do
    finetune_error: str | None = None  # why the last fine-tuning could not run (shown once)
    # Kept by state.saved: the record as this tab last read or wrote it (a save writes only the fields
    # the tab changed since, so another tab's work is never overwritten), what the sidebar must tell
    # (a deleted link, a damaged record, a fine-tuning cut off by a restart), whether another tab has
    # changed the link's data or model since (``stale``) and, once the link's work is deleted, why (``gone``).
    saved: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    stale: bool = False
    gone: str | None = None

    def use_trajectories(self, source: Source | None, city: str | None = None) -> None:
        """Switch to other trajectories (None: back to the sample), named ``city``."""
        self.trajectories, self.city = source, city

    def start_from(self, checkpoint: str | None) -> None:
        """Start from another checkpoint (None: the shipped one); a model tuned from the old one is dropped."""
        if self.base_checkpoint != checkpoint:
            self.base_checkpoint, self.finetuned = checkpoint, None

    def to_record(self) -> dict:
        """The choices that survive a refresh, JSON-safe (uploader ids and scenarios do not: a new
        browser session has neither)."""
        ft = self.finetuned
        return {"trajectories": _source(self.trajectories), "pois": _source(self.pois), "city": self.city,
                "resolution": self.resolution, "weekday_unreliable": self.weekday_unreliable,
                "base_checkpoint": self.base_checkpoint, "finetune_settings": self.finetune_settings.to_dict(),
                "finetuned": None if ft is None else {name: getattr(ft, name) for name in Finetuned.RECORD}}

    @classmethod
    def from_record(cls, token: str, record: dict, finetuned_files: dict | None) -> Session:
        """The session :meth:`to_record` wrote; its fine-tuned model (when the files are back) reloads lazily.
        A record of the wrong shape (hand-edited, damaged) raises ValueError or TypeError."""
        _check_record(record)
        ft = record.get("finetuned")
        return cls(token=token, trajectories=_from_source(record.get("trajectories")),
                   pois=_from_source(record.get("pois")), city=record.get("city"),
                   resolution=record.get("resolution"), weekday_unreliable=bool(record.get("weekday_unreliable")),
                   base_checkpoint=record.get("base_checkpoint"),
                   finetune_settings=FinetuneSettings(**record.get("finetune_settings", {})),
                   finetuned=Finetuned(model=None, outputs=None, files=finetuned_files, **ft)
                   if ft and finetuned_files else None)


_TYPES = MappingProxyType({"city": str, "resolution": int, "base_checkpoint": str, "weekday_unreliable": bool,
                           "finetune_settings": dict, "finetuned": dict, "trajectories": dict, "pois": dict})
_FINETUNED_TYPES = MappingProxyType({"folder": str, "fraction": float, "metrics": dict, "label": str, "steps": int,
                                     "seconds": float, "key": str, "verdict": str})


def _check_record(record: dict) -> None:
    """Refuse a record whose fields are not of the types :meth:`Session.to_record` writes."""
    def check(value, kind, name):
        if value is not None and not (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
                                      or kind is float and isinstance(value, int) and not isinstance(value, bool)):
            raise TypeError(f"{name} is {type(value).__name__}, not {kind.__name__}")

    for name, kind in _TYPES.items():
        check(record.get(name), kind, name)
    for name in ("trajectories", "pois"):
        for part, value in (record.get(name) or {}).items():
            check(value, str, f"{name}.{part}")
    for name, kind in _FINETUNED_TYPES.items():
        if record.get("finetuned"):
            check(record["finetuned"].get(name), kind, f"finetuned.{name}")


def _source(source: Source | None) -> dict | None:
    return None if source is None else asdict(source)


def _from_source(record: dict | None) -> Source | None:
    return None if record is None else Source(**record)


def session() -> Session:
    """This session's object (made on first use; state.saved.restore() makes it from the link first)."""
    if KEY not in st.session_state:
        st.session_state[KEY] = Session()
    return st.session_state[KEY]


def privacy_k() -> int:
    """The privacy threshold k chosen in the sidebar."""
    return check_k(int(st.session_state.get(PRIVACY_K, DEFAULT_K)))
