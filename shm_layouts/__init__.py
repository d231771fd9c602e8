"""The byte contract: every record and segment layout arbpipe puts in shared memory.

This package imports numpy only. Offsets are documented once, beside each dtype;
code elsewhere derives positions from these constants and never hard-codes them.
"""
from shm_layouts.records import (  # noqa: F401
    MARKET_UPDATE,
    OPPORTUNITY,
    RECORD_TYPES,
    RECORD_TYPE_IDS,
    Kind,
    Flag,
    VenueStatus,
    OppState,
    CloseReason,
)
from shm_layouts.journal import JOURNAL, JournalKind, Side, RejectReason, BreakerReason, JournalFlag  # noqa: F401
from shm_layouts.ring import *  # noqa: F401,F403
