"""Market-data recording file (``arbpipe record`` / ``arbpipe replay``), little-endian.

A recording is a small header followed by raw 64-byte ``MarketUpdate`` records
(``shm_layouts.records.MARKET_UPDATE``), exactly as they sat in the feed rings, so the
record part maps straight into numpy::

    hdr = np.fromfile(path, RECORDING_HEADER, count=1)[0]
    recs = np.memmap(path, MARKET_UPDATE, mode="r", offset=int(hdr["header_size"]))

File layout
===========

    offset size type  field           meaning
    ------ ---- ----  --------------  -----------------------------------------------------
         0    8 S8    magic           RECORDING_MAGIC (b"ARBPREC\\x01")
         8    4 u4    layout_version  RECORDING_VERSION
        12    4 u4    record_size     64 (bytes per record)
        16    4 u4    header_size     bytes before the first record: a multiple of 64,
                                      >= 128 (records stay cache-line aligned)
        20    4 u4    names_size      bytes of the names document at NAMES_OFFSET
        24    8 u8    records         records in the file, written at a clean close;
                                      0 while recording (or after a crash): readers then
                                      use (file size - header_size) // 64
        32    8 i8    created_ns      CLOCK_REALTIME ns the recording started
        40    8 i8    first_recv_ns   smallest recv_ts_ns recorded (0: none / unknown)
        48    8 i8    last_recv_ns    largest recv_ts_ns recorded
        56    8 u8    missed          records that went through a tapped ring while the
                                      recorder could not keep up (not in the file)
        64    -       names           UTF-8 JSON, names_size bytes, zero padded up to
                                      header_size: {"venues": {"<venue id>": name},
                                      "instruments": {"<canonical id>": "BASE/QUOTE"},
                                      "perp_id_bit": int, "rings": [tapped ring names],
                                      "source": str}
    header_size  64*n  records        MARKET_UPDATE records, in the order the recorder saw
                                      them (per ring in ring order; rings interleaved)

Replay publishes each record into ``feed.<venue name>`` with ``recv_ts_ns`` replaced by
its publish time, ``exchange_ts_ns`` shifted by the same amount (0 stays 0) and
``Flag.REPLAYED`` set; every other byte is unchanged.
"""
import numpy as np

RECORDING_MAGIC = b"ARBPREC\x01"
RECORDING_VERSION = 1
RECORD_SIZE = 64
NAMES_OFFSET = 64
MIN_HEADER_SIZE = 128

RECORDING_HEADER = np.dtype({
    "names": ["magic", "layout_version", "record_size", "header_size", "names_size",
              "records", "created_ns", "first_recv_ns", "last_recv_ns", "missed"],
    "formats": ["S8", "<u4", "<u4", "<u4", "<u4", "<u8", "<i8", "<i8", "<i8", "<u8"],
    "offsets": [0, 8, 12, 16, 20, 24, 32, 40, 48, 56],
    "itemsize": 64,
})
assert RECORDING_HEADER.itemsize == NAMES_OFFSET


def header_size_for(names_size: int) -> int:
    """Bytes of header for a names document of ``names_size`` bytes (multiple of 64)."""
    need = NAMES_OFFSET + names_size
    return max(MIN_HEADER_SIZE, (need + 63) // 64 * 64)
