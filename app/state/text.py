"""Text that comes from outside (file names, city names, labels, error messages), fit to show.

Streamlit draws captions, alerts, headings and widget labels as Markdown: a city name or file
name ``![t](http://host/track.png)`` would make the planner's browser fetch that image, and a
``www.`` name becomes a link. So whatever a file, an upload's name or a typed name puts on the
page goes through :func:`plain` (what Markdown would act on escaped or broken: it reads as typed). Error
messages of libraries the app calls can hold the server's file paths, which show the session's
link token (``WORK_DIR/sessions/<token>/...``): :func:`error` cuts every absolute path to its
file name (trajmoe.errors.without_paths) and removes the token, then escapes the rest.
"""

from __future__ import annotations

import re

from state.session import session
from trajmoe.errors import without_paths

# CommonMark lets every ASCII punctuation character be escaped with a backslash. Escaped: what
# makes links and images ([ ] <), HTML (< and an entity's &), code, emphasis and strikethrough
# (` * ~), $LaTeX$, and an underscore that could start or end emphasis (one between two letters or
# digits cannot: "my_city.csv" reads the same escaped or not, and so do the messages that quote it).
_MARKDOWN = re.compile(r"[\\`*\[\]<~$]|&(?=#?\w+;)|(?<![^\W_])_|_(?![^\W_])")
# Streamlit's Markdown finds GFM autolinks (www.host, http://host, user@host) and :shortcodes: in
# the text after the escapes are read, so a backslash does not stop them (a real browser made
# "www\.x" a link): an invisible WORD JOINER after "www", after a colon that a letter follows and
# before "@" breaks their patterns and leaves the text as it reads.
_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?<=www)(?=\.)|(?<=:)(?=[^\s\d])|(?=@)", re.IGNORECASE)
_LINE_START = re.compile(r"^(?=[#>+=-])|^(\d+)(?=[.)])")  # a heading, quote, list item or rule when a line starts so


def plain(value) -> str:
    """``value`` as text that Markdown shows as typed: no formatting, link, image or HTML; one line."""
    text = _MARKDOWN.sub(lambda m: "\\" + m.group(), " ".join(str(value).split()))
    text = _AUTOLINK.sub(_JOINER, text)
    return _LINE_START.sub(lambda m: (m.group(1) or "") + "\\", text, count=1)


def error(exc: BaseException | str) -> str:
    """An error message to show: every absolute path cut to its file name, this session's link token
    removed, no Markdown from its text."""
    return plain(without_paths(str(exc)).replace(session().token, "(this link)"))
