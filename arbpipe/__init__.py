"""arbpipe: cross-exchange arbitrage pipeline over shared-memory rings."""
__version__ = "0.1.0"
