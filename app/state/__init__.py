"""What the app keeps and computes, by concern: data only, no widget (the pages and
``page_parts.py`` show it; tests/test_app_layout.py checks).

* :mod:`state.session`: the one typed object a planner's session keeps (``st.session_state``, one key).
* :mod:`state.inputs`: the files (bundled or uploaded), the POIs, the prepared city.
* :mod:`state.models`: the checkpoint a session starts from and the shared pretrained model.
* :mod:`state.summaries`: what the data pages show of the visits (the privacy rule applied), the
  base map's file and the cells' names.
* :mod:`state.predictions`: the model the pages show and its predictions over every visit, on
  the app's one run subset of the city.
* One module per analysis page for what it shows from the model: :mod:`state.finetuning`,
  :mod:`state.flows`, :mod:`state.experts`, :mod:`state.scenario`.
* :mod:`state.saved`: what survives a refresh (the link's token, the session's folder, expiry,
  delete).
* :mod:`state.project`: the project file (download, and loading one as hostile input).
* :mod:`state.text`: text from files and other libraries made safe to show (no Markdown, no path).
* :mod:`state.storage`: the disk all sessions share: the link's lock, whole-file writes, tombstones
  of deleted links, disk quotas and the expiry sweep.

Dependencies run one way: ``session`` <- ``storage``, ``text`` <- ``inputs`` <- ``summaries``,
``predictions``, ``saved``, ``project``; ``predictions`` <- the page modules. Maps and charts
(``maps/``, ``charts.py``) only draw.
"""
