"""Venue adapters, one module per venue with the same shape (see ``base``).

Importing this package imports every venue module so that ``base.REGISTRY``
knows them all. To add a venue: one module here plus its config entry.
"""
import importlib
import pkgutil

from arbpipe.venues.base import REGISTRY, VenueAdapter, get, register  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name not in ("base", "sink"):
        importlib.import_module(f"{__name__}.{_m.name}")
