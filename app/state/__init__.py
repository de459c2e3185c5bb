"""What the app keeps and computes, by concern; the pages lay out widgets and call these.

* :mod:`state.session`: the one typed object a planner's session keeps (``st.session_state``, one key).
* :mod:`state.inputs`: the files (bundled or uploaded), the POIs, the prepared city, checkpoints
  and the shared pretrained model.
* :mod:`state.outputs`: what is shown from them: predictions, fine-tuning, flows, experts,
  scenarios, cell names and the privacy-filtered summaries of the data.
* :mod:`state.saved`: what survives a refresh (the link's token, the session's folder, expiry,
  delete).
* :mod:`state.project`: the project file (download, and loading one as hostile input).
* :mod:`state.text`: text from files and other libraries made safe to show (no Markdown, no path).
* :mod:`state.storage`: the disk all sessions share: the link's lock, whole-file writes, tombstones
  of deleted links, disk quotas and the expiry sweep.

Dependencies run one way: ``session`` <- ``text`` <- ``inputs`` <- ``outputs``, ``saved``, ``project``; ``views`` (app/views.py) only draws.
"""
