"""What the driver has to say, as events: the CLI decides how to show them (only the CLI prints).

events = Events(on_event)       # on_event(Event) -> None, e.g. the CLI's printer; None drops them
events.info("sweep done: ...")  # progress, notes: standard output
events.error("aal-sweep: ...")  # what went wrong and what to do: standard error
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

INFO, ERROR = "info", "error"


@dataclass(frozen=True)
class Event:
    text: str
    level: str = INFO  # INFO: a user reads it on stdout; ERROR: on stderr (failures, what to do)
    kind: str = "note"  # note | progress | resume | partners | done: lets a caller pick what it shows


class Events:
    def __init__(self, on_event: Callable[[Event], None] | None = None):
        self.on_event = on_event

    def info(self, text: str, kind: str = "note") -> None:
        self._emit(Event(text, INFO, kind))

    def error(self, text: str, kind: str = "note") -> None:
        self._emit(Event(text, ERROR, kind))

    def _emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
