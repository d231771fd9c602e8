"""Venue adapters: one module per venue with the same shape (``base``), listed in
``registry``. To add a venue: one module here, one line in ``registry``, its config entry."""
