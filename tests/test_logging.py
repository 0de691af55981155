"""The CLI's logging: every record once, a repeated condition once per command (issue 29)."""

from __future__ import annotations

import io
import logging

from aal_sweep.cli import _OncePerRun


def test_a_warning_met_again_is_shown_once_and_errors_always():
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(_OncePerRun())
    log = logging.getLogger("aal_sweep.test_logging")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(3):
            log.warning("%s is unreadable (%s); it will be rebuilt", "partners.parquet", "bad magic")
        log.warning("%s is unreadable (%s); it will be rebuilt", "_manifest.json", "bad magic")
        log.error("the same error")
        log.error("the same error")
    finally:
        log.removeHandler(handler)
    assert out.getvalue().splitlines() == [
        "partners.parquet is unreadable (bad magic); it will be rebuilt",
        "_manifest.json is unreadable (bad magic); it will be rebuilt",
        "the same error",
        "the same error",
    ]
