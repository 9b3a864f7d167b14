"""speechmax.listen: a self-hosted listening test (quality MOS and word identification).

Run it with ``speechmax listen --set DIR --db FILE``; build it into another program with
``create_app(set_dir, db_path, admin_token)`` (a FastAPI app, served by any ASGI server). Write a set from
numpy audio with ``write_listening_set`` (``hidden_controls`` adds references and anchors). The package does
not import torch, so the web app runs on a machine without it.

Listening-set format
--------------------
A set is a folder holding ``manifest.json`` and the audio it names::

    {"name": "maximized-v1",
     "words": ["backward", "bed", ..., "zero"],
     "clips": [{"id": "yes-features-03", "file": "features/yes_03.wav",
                "condition": "features-noise", "word": "yes", "role": "test"}, ...]}

- ``name``: a non-empty string; a results database belongs to one set name and refuses another.
- ``words``: the answer choices of the identification question, in the order shown (unique non-empty
  strings, never ``"none"``, which is the "none / can't tell" answer). A set without it (written before
  it existed) offers the words its clips name, sorted.
- ``id``: unique; 1–128 characters of ``A-Z a-z 0-9 _ . -``, the first a letter or digit.
- ``file``: a relative path to a ``.wav`` file inside the folder (absolute paths, ``..`` escapes and
  symlinks pointing outside the folder are rejected when the set is loaded).
- ``condition``: any non-empty string; the unit summaries are grouped by (MOS and accuracy per condition,
  and per class within each condition).
- ``word``: the intended word, one of ``words``, or ``null`` when there is none (identification
  accuracy is then not scored for that clip).
- ``role``: ``"test"`` (the clips being evaluated), ``"reference"`` (clean clips of a known word) or
  ``"anchor"`` (deliberately degraded clips). A reference must name its word.

Raters open ``/`` (``/?label=ID`` records an outside participant id, e.g. from a recruiting site, with
the rater); results are at ``/admin``. Each rater hears every clip at most once, in an order that spreads each condition evenly over the
session (``trial_order``). With a per-rater limit, each rater gets an equal share of test clips from
every condition, least-heard clips first, and a few references and anchors.

Attention checks (``rater_status``)
-----------------------------------
A rater *fails* when either
- they identified fewer than half of the references they answered, once they have answered at least
  ``MIN_REFERENCES`` (2) references; or
- their mean rating of anchors is at least their mean rating of references, once they have answered at
  least one of each.
Until a rule can be applied the rater is *pending*; pending raters count in the summaries, failed ones
do not (their answers stay in the database and the CSV, marked ``failed``).
"""
from .sets import ROLES, NONE_WORD, Clip, ListeningSet, load_listening_set, trial_order
from .build import SetClip, anchor, hidden_controls, write_listening_set
from .stats import MIN_REFERENCES, mean_ci, wilson_interval, rater_status, rater_statuses, summarize
from .db import ListenDB, SCHEMA_VERSION
from .app import create_app

__all__ = [
    "ROLES", "NONE_WORD", "Clip", "ListeningSet", "load_listening_set", "trial_order",
    "SetClip", "anchor", "hidden_controls", "write_listening_set",
    "MIN_REFERENCES", "mean_ci", "wilson_interval", "rater_status", "rater_statuses", "summarize",
    "ListenDB", "SCHEMA_VERSION", "create_app",
]
