"""The bridge: rings of one tree copied to another tree (on another host) over Redis Streams.

    tree A (feeds host)                         Redis                      tree B (detector host)
    feed.okx ──peek──> bridge.out ──XADD──> arbpipe:A:ring:feed.okx ──XREAD──> bridge.in ──> feed.okx ──> detector
                                  HSET  ──> arbpipe:A:bridge:meta   <──HGETALL/HMGET──┘    (STATUS STALE / UP)

One concern per module:

  ``resp``     RESP built and parsed in numba: the XADD rounds, the XREAD replies, the entry fields
  ``link``     the connection (redis-py handshake, then the raw socket), errors scrubbed of secrets
  ``meta``     the out side's announcement (symbol table, layout, heartbeat) and the in side's check
  ``out``      the out side: taps -> pipelined XADDs, positions resumed from the streams
  ``inbound``  the in side: XREAD -> checks, duplicates and gaps by seq -> local rings, the link's
               verdict (STALE / UP), the saved cursor and its recovery after a crash
  ``stats``    key names, state blob names, ``arbpipe stat bridge``, the ``arbpipe status`` line

Processes: ``procs.bridge --side out|in`` (``bridge.out``, ``bridge.in`` in the supervisor's
plan when ``[bridge] enabled``). Configuration: ``arbpipe.config.BridgeConfig``. Operation:
docs/operations.md, "Two hosts"; design: docs/design.md, "The bridge".
"""
