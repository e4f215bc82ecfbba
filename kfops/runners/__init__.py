"""What runs pipelines and loops: the local kfp.local runner, the local scheduler, the registry
reconciler and the month-by-month backtest.
"""
