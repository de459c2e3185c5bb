"""The one object a planner's session keeps: what they chose and what they made.

Everything the app itself remembers between reruns lives in one :class:`Session`, stored under
one key of ``st.session_state``; widget values stay under their widget keys (Streamlit owns
those). Another session never sees this object, so uploads and fine-tuned models stay private to
the planner who made them (tests/test_isolation.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from trajmoe.analysis.privacy import DEFAULT_K, check_k

KEY = "trajmoe"  # the session's one key in st.session_state
PRIVACY_K = "privacy_k"  # the sidebar slider's widget key (its value: the privacy threshold k)


@dataclass(frozen=True)
class Source:
    """An input file: bundled or uploaded (written to disk once, named by its content digest)."""

    label: str  # plain words for planners
    path: str
    key: str  # content digest: the cache key


@dataclass
class Finetuned:
    """A model this session fine-tuned: its own copy, its predictions and its downloads."""

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


@dataclass
class Session:
    """What one session keeps between reruns (None: the default)."""

    trajectories: Source | None = None  # None = the bundled Helsinki sample
    pois: Source | None = None  # None = the bundled Helsinki centre POIs
    city: str | None = None  # None = "Helsinki"
    resolution: int | None = None  # H3 resolution asked for; None = prepare's automatic choice
    weekday_unreliable: bool = False  # the file's weekdays are shifted: use the hour only
    base_checkpoint: str | None = None  # an uploaded checkpoint to start from (weights path)
    finetuned: Finetuned | None = None
    uploads: dict[str, Source] = field(default_factory=dict)  # uploader file_id -> the file written
    applied_uploads: dict[str, str] = field(default_factory=dict)  # "trajectories"/"pois" -> file_id used
    scenarios: dict[tuple, object] = field(default_factory=dict)  # (model key, edits) -> ScenarioResult

    def use_trajectories(self, source: Source | None, city: str | None = None) -> None:
        """Switch to other trajectories (None: back to the sample), named ``city``."""
        self.trajectories, self.city = source, city

    def start_from(self, checkpoint: str | None) -> None:
        """Start from another checkpoint (None: the shipped one); a model tuned from the old one is dropped."""
        if self.base_checkpoint != checkpoint:
            self.base_checkpoint, self.finetuned = checkpoint, None


def session() -> Session:
    """This session's object (made on first use)."""
    if KEY not in st.session_state:
        st.session_state[KEY] = Session()
    return st.session_state[KEY]


def privacy_k() -> int:
    """The privacy threshold k chosen in the sidebar."""
    return check_k(int(st.session_state.get(PRIVACY_K, DEFAULT_K)))
