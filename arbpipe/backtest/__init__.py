"""``arbpipe backtest``: a recording through the live detector and paper strategy on a
simulated clock (``engine``), its metrics and reports (``report``, ``plots``), the command
(``cli``). docs/operations.md, "Backtest", is the operator's guide."""
