"""Ring segment layout: one descriptor for every ring kind (SPSC, MPMC, broadcast).

Every arbpipe ring lives in one POSIX shared-memory segment laid out as below.
All integers are little-endian; every cursor or counter group owned by one side
sits on its own 128-byte block (two cache lines, so the adjacent-line prefetcher
never couples a writer's line with a reader's).

    byte offset          size  field                      written by
    -------------------  ----  -------------------------  ---------------------------
    HEADER (0 .. 127)
      0                     8  magic  (MAGIC)             creator, once
      8                     4  layout_version             creator, once
     12                     4  ring_kind (RingKind)       creator, once
     16                     4  record_size (bytes)        creator, once
     20                     4  capacity (records, 2^k)    creator, once
     24                     4  creator_pid                creator, once
     28                     4  full_policy (FullPolicy)   creator, once
     32                     8  created_ns (CLOCK_REALTIME) creator, once
     40                     8  creator_start_ticks        creator, once (pid-reuse guard)
     48                     4  max_readers                creator, once
     52                     4  record_type (records.RECORD_TYPE_IDS)
     56                     4  seq_offset (bytes; 0 unless MPMC)
     60                     4  data_offset (bytes)
     64                    64  name (ASCII, NUL padded)   creator, once
    PRODUCER_CURSOR (128)   8  head: records published (SPSC/broadcast) or
                               enqueue position (MPMC)
      +8                    8  claim (SPSC): positions below it may be being written; a
                               tap reading slot p is safe while p >= claim - capacity
    CONSUMER_CURSOR (256)   8  tail: records consumed (SPSC) or dequeue position (MPMC)
    PRODUCER_STATS (384)       producer-owned counters
      +0                    8  dropped (records refused by drop-newest / timeout)
      +8                    8  full_events (push found the ring full)
     +16                    8  batches (push calls that published >= 1 record)
     +24                    8  abandoned (MPMC: slots claimed by a producer that died before
                               committing them, skipped by consumers; no record is lost)
     +32                    8  orphaned (MPMC: records dequeued by a consumer that died before
                               releasing their slots; released on its behalf)
    CONSUMER_DOORBELL (512)    consumers waiting for records (SPSC/MPMC; broadcast
                               readers arm their own slot but share `sleepers`)
      +0                    8  sleepers (consumers blocked on the doorbell now)
      +8                    8  sleeps (total times a consumer blocked)
     +16                    8  wakes (blocked consumers woken by a post)
     +24                    8  armed (1: a sleeper wants a post; the poster clears it by CAS)
     +32                    8  posts (semaphore posts made)
     +40                    8  sleeper (SPSC only: token of the process counted in
                               `sleepers` now, 0 = none; MPMC/broadcast sleepers register
                               in their own reader / producer slot instead)
     +48                    8  sleepers_reclaimed (dead sleepers' registrations undone)
     +56                    8  bell (SPSC only: token of a consumer that sleeps on one
                               semaphore for several rings, 0 = none: a poster posts
                               the bell named below instead of this ring's own)
     +64                   64  bell_name (ASCII, NUL padded: the segment whose
                               semaphore `<segment>.bell` is that consumer's doorbell)
    PRODUCER_DOORBELL (640)    producers waiting for space (policy BLOCK), same shape
    READER_SLOTS (1024)        max_readers blocks of READER_SLOT_SIZE (128) bytes
      +0                    8  position (broadcast: next record to read)
      +8                    8  owner_pid (0 = free slot)
     +16                    8  received (records handed to this reader)
     +24                    8  lost (broadcast: records skipped because lapped)
     +32                    8  laps (times this reader was lapped)
     +40                    8  armed (1: this reader sleeps and wants a post)
     +48                    8  sleeps
     +56                    8  wakes
     +64                   32  reader name (ASCII, NUL padded)
     +96                    8  claim_pos (MPMC consumer: first position of its dequeue claim)
    +104                    8  claim_n (MPMC: records claimed; < 0 once counted in received;
                               the last claim stays announced after it is done)
    +112                    8  owner_start (start ticks of owner_pid: pid-reuse guard; 0 =
                               unknown or a takeover in progress, judge by the pid alone)
    +120                    8  sleeper (the owner's token while it is counted in the
                               consumer doorbell's `sleepers`; 0 = not asleep)
    PRODUCERS (MPMC only, producers_offset(max_readers)): PRODUCER_SLOTS x 64 bytes
      +0                    8  pid (0 = free slot)
      +8                    8  start ticks of that pid (pid-reuse guard)
     +16                    8  claim_pos (first position of the producer's enqueue claim)
     +24                    8  claim_n (records of its last claim; 0 = none yet)
     +32                    8  sleeper (its token while counted in the producer doorbell's
                               `sleepers`; 0 = not asleep)
    SEQ (seq_offset)           MPMC only: capacity x u8 per-slot sequence (Vyukov); bit 62
                               (SEQ_POISON) marks a slot abandoned by a dead producer
    DATA (data_offset)         capacity x record_size bytes, 128-byte aligned

SPSC and MPMC consumers also take a reader slot, so that `stat rings` can show
per-reader counts for every kind. Positions are monotonically increasing 64-bit
counts; a slot index is `position & (capacity - 1)`.

MPMC crash recovery: every producer and consumer announces its claim (claim_pos,
claim_n) before the CAS that makes it. A slot stuck between
claim and commit (or dequeue and release) whose every announced claimant is dead is
poisoned (skipped, `abandoned`) or released (`orphaned`) by whoever waits on it
(arbpipe.transport.rings.MpmcRing.recover).

Doorbell sleepers: a sleeper adds 1 to its doorbell's `sleepers`, then stores its
sleeper token (start_ticks << SLEEPER_PID_BITS | pid: one process incarnation) into
its registration word (by CAS from 0); it leaves by CAS(token -> 0) and only then
subtracts 1. A process SIGKILLed asleep leaves its token behind: whoever finds a
token whose process is gone (the next owner of the slot, the restarted SPSC side,
or the other side's rate-limited check when it finds `sleepers` > 0 but nobody
armed) CASes it to 0 and, only if that CAS won, subtracts 1 from `sleepers` and
adds 1 to `sleepers_reclaimed`. One CAS per token: a registration is undone once,
and a live (or newer) sleeper's token is never mistaken for the dead one's.

Slot takeover (reader slots, MPMC producer slots): a slot whose owner is dead is
taken by CAS(start: dead owner's ticks -> 0) then CAS(pid: dead -> new); the new
owner then stores its own start ticks. A reader of the slot thus never pairs the new
pid with the old owner's start ticks (which would make a live owner look dead).
"""
import enum

from shm_layouts.kinds import RingKind  # noqa: F401 (the ring kinds, defined once there)

MAGIC = 0x3150495042524141  # bytes b"AARBPIP1" little-endian
LAYOUT_VERSION = 2   # 2: MPMC producer table, claim words, abandoned/orphaned
# (sleeper registration and reader owner_start use words that version 2 reserved and
# left zero; zero means "none" / "unknown" in both, so the version is unchanged)

BLOCK = 128  # bytes between independently written cursor groups

# ---- byte offsets -----------------------------------------------------------
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_KIND = 12
OFF_RECORD_SIZE = 16
OFF_CAPACITY = 20
OFF_CREATOR_PID = 24
OFF_POLICY = 28
OFF_CREATED_NS = 32
OFF_CREATOR_START = 40
OFF_MAX_READERS = 48
OFF_RECORD_TYPE = 52
OFF_SEQ_OFFSET = 56
OFF_DATA_OFFSET = 60
OFF_NAME = 64
NAME_LEN = 64

OFF_HEAD = 1 * BLOCK
OFF_TAIL = 2 * BLOCK
OFF_PSTATS = 3 * BLOCK
OFF_CDOOR = 4 * BLOCK
OFF_PDOOR = 5 * BLOCK
OFF_READERS = 8 * BLOCK
READER_SLOT_SIZE = BLOCK
READER_NAME_OFF = 64
READER_NAME_LEN = 32

# ---- the same positions as 64-bit word indices (offset // 8), for numba kernels --
W_HEAD = OFF_HEAD // 8
W_TAIL = OFF_TAIL // 8
W_CLAIM = OFF_HEAD // 8 + 1
W_DROPPED = OFF_PSTATS // 8 + 0
W_FULL_EVENTS = OFF_PSTATS // 8 + 1
W_BATCHES = OFF_PSTATS // 8 + 2
W_ABANDONED = OFF_PSTATS // 8 + 3
W_ORPHANED = OFF_PSTATS // 8 + 4
W_CDOOR = OFF_CDOOR // 8
W_PDOOR = OFF_PDOOR // 8
# word offsets inside a doorbell block
D_SLEEPERS = 0
D_SLEEPS = 1
D_WAKES = 2
D_ARMED = 3
D_POSTS = 4
D_SLEEPER = 5        # SPSC sleeper registration (token)
D_RECLAIMED = 6      # sleepers_reclaimed
D_BELL = 7           # SPSC consumer: token of a shared-bell sleeper (0 = none)
D_BELL_NAME_OFF = 64  # byte offset in the block of the bell's segment name
BELL_NAME_LEN = 64
# header words read by kernels (two u32 fields per word)
W_GEOM = OFF_RECORD_SIZE // 8     # record_size | capacity << 32
W_POLICY = OFF_CREATOR_PID // 8   # creator_pid | policy << 32
W_OFFSETS = OFF_SEQ_OFFSET // 8   # seq_offset | data_offset << 32
# ... the field at the lower byte offset is the low half of the word
HALF_SHIFT = 8 * (OFF_CAPACITY - OFF_RECORD_SIZE)   # 32: the high field is word >> HALF_SHIFT
HALF_MASK = (1 << HALF_SHIFT) - 1                   # the low field is word & HALF_MASK
WORD_SHIFT = 3       # byte offset >> WORD_SHIFT = index of its 8-byte word
W_READERS = OFF_READERS // 8
READER_SLOT_WORDS = READER_SLOT_SIZE // 8
# word offsets inside one reader slot
R_POSITION = 0
R_OWNER_PID = 1
R_RECEIVED = 2
R_LOST = 3
R_LAPS = 4
R_ARMED = 5
R_SLEEPS = 6
R_WAKES = 7
R_CLAIM_POS = 12
R_CLAIM_N = 13
R_OWNER_START = 14
R_SLEEPER = 15
# MPMC producer table
PRODUCER_SLOTS = 64
PRODUCER_SLOT_SIZE = 64
PRODUCER_SLOT_WORDS = PRODUCER_SLOT_SIZE // 8
P_PID = 0
P_START = 1
P_CLAIM_POS = 2
P_CLAIM_N = 3
P_SLEEPER = 4
SEQ_POISON = 1 << 62
SEQ_POSITION = SEQ_POISON - 1   # mask: the position part of a sequence word
# sleeper token = start_ticks << SLEEPER_PID_BITS | pid (pid_max is at most 2**22 on Linux)
SLEEPER_PID_BITS = 24
SLEEPER_PID_MASK = (1 << SLEEPER_PID_BITS) - 1


class FullPolicy(enum.IntEnum):
    BLOCK = 0        # producer waits (with timeout) for space
    DROP_NEWEST = 1  # the records that do not fit are refused and counted
    OVERWRITE = 2    # broadcast only: writer never waits, slow readers are lapped


def _align(n, a=BLOCK):
    return (n + a - 1) // a * a


def producers_offset(max_readers):
    """Byte offset of the MPMC producer table (right after the reader slots)."""
    return _align(OFF_READERS + max_readers * READER_SLOT_SIZE)


def segment_layout(kind, capacity, record_size, max_readers):
    """Return (seq_offset, data_offset, total_size) in bytes for a ring."""
    if capacity <= 0 or capacity & (capacity - 1):
        raise ValueError(f"capacity must be a power of two, got {capacity}")
    if record_size <= 0 or record_size % 8:
        raise ValueError(f"record_size must be a positive multiple of 8, got {record_size}")
    end_readers = OFF_READERS + max_readers * READER_SLOT_SIZE
    seq_offset = 0
    if kind == RingKind.MPMC:
        seq_offset = _align(producers_offset(max_readers) + PRODUCER_SLOTS * PRODUCER_SLOT_SIZE)
        data_offset = _align(seq_offset + 8 * capacity)
    else:
        data_offset = _align(end_readers)
    total = _align(data_offset + capacity * record_size, 4096)
    return seq_offset, data_offset, total


__all__ = [n for n in dir() if n.isupper() or n in ("RingKind", "FullPolicy", "segment_layout",
                                                   "producers_offset")]
