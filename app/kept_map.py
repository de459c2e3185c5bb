"""The kept map: Flows, Experts and Scenario share one map that the browser keeps across them.

Why: Streamlit makes a page's elements anew on every page switch: each map a new WebGL context, in
which a browser without a graphics card builds the map's drawing pipeline again (0.25-0.55 s).
Elements that the entry file writes outside the page are kept instead; so these pages hand their
one map to :class:`MapLayout`, which the entry file draws after the page at the same place on all
three: the browser keeps that map and only redraws its layers (and keeps the planner's zoom while
its starting view stays the same). Page switches among them went from a median 1.14 s to 0.70 s
in an A/B on this machine (bench/app_speed.py measures it).

How, in one script run:

* the entry file calls :meth:`MapLayout.start` with the page's title, runs the page inside
  ``layout.above`` and calls :meth:`MapLayout.draw` in a ``finally`` (also after ``st.stop()``),
  catching :class:`PageDone`;
* the page hands its map to :func:`page_map`, writes what follows it ``with below_map():``, and
  ends early with :func:`end_page` instead of ``st.stop()`` once the map is handed over;
* run on its own (no layout: a test, another entry file), a page draws its map in place.

This run's layout is found through ``st.session_state`` (the page runs in the same session and
thread as the entry file); it is removed again when the map is drawn. Page control flow only:
what is drawn comes from :mod:`maps`.
"""

from __future__ import annotations

import pydeck as pdk
import streamlit as st

from maps.deck import show

MAP_PAGES = ("Flows", "Experts", "Scenario")
_LAYOUT = "_map_layout"  # st.session_state: this script run's MapLayout (None on other pages)


class MapLayout:
    """This run's page, in order: ``above`` (the page runs in it), the map slot, ``below``
    (:func:`below_map`: what follows the map)."""

    def __init__(self) -> None:
        self.above, self.slot, self.below = st.container(), st.container(), st.container()
        self.deck: pdk.Deck | None = None
        st.session_state[_LAYOUT] = self

    @staticmethod
    def start(page_title: str) -> MapLayout | None:
        """A layout for an analysis page (:data:`MAP_PAGES`), else None (the page draws its maps itself)."""
        st.session_state.pop(_LAYOUT, None)
        return MapLayout() if page_title in MAP_PAGES else None

    def draw(self) -> None:
        """After the page (also after st.stop): its map, with one key on every page."""
        st.session_state.pop(_LAYOUT, None)
        if self.deck is not None:
            with self.slot:
                show(self.deck, key="page_map")


def page_map(d: pdk.Deck) -> None:
    """The page's one map, drawn under what the page wrote so far. Everything after it on the page
    goes ``with below_map():``. Outside a :class:`MapLayout` (a page run on its own) drawn here."""
    layout = st.session_state.get(_LAYOUT)
    if layout is None:
        show(d, key="page_map")
        return
    layout.deck = d


class PageDone(Exception):
    """Raised by :func:`end_page`; the entry file catches it."""


def end_page() -> None:
    """``st.stop()`` for a page that has handed over its map: Streamlit draws nothing after
    st.stop(), so this ends the page and lets the entry file draw the map."""
    if st.session_state.get(_LAYOUT) is None:
        st.stop()
    raise PageDone


def below_map():
    """The container under the page's map (:func:`page_map`); a new one in place without a layout."""
    layout = st.session_state.get(_LAYOUT)
    return layout.below if layout is not None else st.container()
