"""L2 order books: the numba kernels every holder of a book runs.

* ``kernels``: one side of a book as sorted price/qty arrays (bids high to low, asks low to
  high): apply levels (qty 0 removes), and the difference between two top-N views as the
  LEVEL records that turn one into the other.
* ``full``: ``FullBook``, the feed handler's book of one instrument at the depth the venue
  publishes, which turns each depth message into the LEVEL records of its top-N change.
* ``parse``: a depth message's [price, qty] rows straight from the frame's raw JSON bytes
  into one float64 array (bit for bit ``float(text)``; anything unusual is left to the
  adapter's decoder, as before).

A consumer (the detector; ``TopBook`` in tests and tools) keeps the top N only: it applies
LEVEL records and truncates to N, which reproduces the feed's top N exactly because the
feed publishes every level that enters the top N, including one a deletion exposed from
deeper in the book (docs/design.md, "Order books").
"""
