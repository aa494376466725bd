"""The recording booth: prompted sessions with live levels, instant QC, retakes kept as versions.

``fieldcap booth`` runs a full-screen terminal UI (``ui``) over a state machine (``session``) that
drives the sessions API of the booth's own agent (``station``: the daemon's pipeline, so takes are
screened, kept and synced exactly like any capture). Prompt scripts come from ``scripts``, the
live meter from ``levels``, the per-microphone QC of each take from the QC pass (``agent.qc``); ``records``,
``coverage`` and ``review`` read what the catalog knows, which is all the state there is. The click
commands are in ``commands``.
"""

from __future__ import annotations

from agent.booth.coverage import Cell, SessionCoverage, session_coverage
from agent.booth.levels import ChannelLevel, LevelMeter, LevelThresholds
from agent.booth.records import booth_sessions, resolve_booth_session, session_takes
from agent.booth.scripts import PromptItem, Script, ScriptError, load_script, parse_script

__all__ = [
    "Cell",
    "ChannelLevel",
    "LevelMeter",
    "LevelThresholds",
    "PromptItem",
    "Script",
    "ScriptError",
    "SessionCoverage",
    "booth_sessions",
    "load_script",
    "parse_script",
    "resolve_booth_session",
    "session_coverage",
    "session_takes",
]
