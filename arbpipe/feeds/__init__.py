"""Feed handlers: venue websockets in, MarketUpdate records out (docs/design.md, docs/venues.md).

    runtime.py     the process: adapter from names, ring and counters set up, signals
    feed.py        Feed: the workers, STATUS records, silent-symbol watchdog, counters
    worker.py      one thread per websocket: connect, subscribe, read, planned reconnects
    connection.py  one connection, and the reconnect / backoff / half-open probe policy
    sinks.py       RingSink (records into the SPSC ring) and PrintSink (JSON lines)
    stats.py       the counters segment: writer, readers, `arbpipe stat feeds` table
    options.py     FeedOptions, the tunables
    venues/        one adapter per venue (wire protocol only), the checks they share,
                   the registry
"""
