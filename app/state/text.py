"""Text that comes from outside (file names, city names, labels, error messages), fit to show.

Streamlit draws captions, alerts, headings and widget labels as Markdown: a city name or file
name ``![t](http://host/track.png)`` would make the planner's browser fetch that image, and a
``www.`` name becomes a link. So whatever a file, an upload's name or a typed name puts on the
page goes through :func:`plain` (every Markdown character escaped: it reads as typed). Error
messages of libraries the app calls can hold the server's file paths, which show the session's
link token (``WORK_DIR/sessions/<token>/...``): :func:`error` cuts every absolute path to its
file name (trajmoe.errors.without_paths) and removes the token, then escapes the rest.
"""

from __future__ import annotations

import re

from state.session import session
from trajmoe.errors import without_paths

# CommonMark lets every ASCII punctuation character be escaped with a backslash. Escaped: what
# makes links and images ([ ] <, and the GFM autolinks http:// www. user@host mailto:), HTML (< and
# an entity's &), code, emphasis and strikethrough (` * ~), Streamlit's :icon: and $LaTeX$, and an
# underscore that could start or end emphasis. Left as they are, because they cannot act in one line
# of text: an underscore between two letters or digits, a colon before a space or digit, a lone
# & or |: so "my_city.csv", "12:00" and "rows read: 5" read the same in the app's text and here.
_MARKDOWN = re.compile(r"[\\`*\[\]<~$@]|(?<=www)\.|:(?=[^\s\d])|&(?=#?\w+;)|(?<![^\W_])_|_(?![^\W_])",
                       re.IGNORECASE)
_LINE_START = re.compile(r"^(?=[#>+=-])|^(\d+)(?=[.)])")  # a heading, quote, list item or rule when a line starts so


def plain(value) -> str:
    """``value`` as text that Markdown shows as typed: no formatting, link, image or HTML; one line."""
    text = _MARKDOWN.sub(lambda m: "\\" + m.group(), " ".join(str(value).split()))
    return _LINE_START.sub(lambda m: (m.group(1) or "") + "\\", text, count=1)


def error(exc: BaseException | str) -> str:
    """An error message to show: every absolute path cut to its file name, this session's link token
    removed, no Markdown from its text."""
    return plain(without_paths(str(exc)).replace(session().token, "(this link)"))
