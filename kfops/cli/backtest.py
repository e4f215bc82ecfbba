"""``kfops backtest``: replay months of data to compare retrain policies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kfops.cli.options import ConfigOption, SetOption, cli_config
from kfops.runners.backtest import POLICIES

app = typer.Typer(help="Replay months of data, month by month, under retrain policies.", no_args_is_help=True)

@app.command()
def backtest_command(
    from_: Annotated[
        str | None, typer.Option("--from", help="First month replayed, YYYY-MM; the champion trains on the month "
                                 "before. Default: the second month of dataset.start..end.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Last month replayed, YYYY-MM. Default: the month of dataset.end.")
    ] = None,
    policy: Annotated[
        list[str] | None, typer.Option(
            "--policy", "-p", help=f"{', '.join(POLICIES[:-1])} or {POLICIES[-1]}; repeat to compare (default: all).")
    ] = None,
    sample: Annotated[
        float | None, typer.Option("--sample", help="Use this fraction of the rows (e.g. 0.1) for a quick run.",
                                   min=0.001, max=1.0)
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Where backtest.csv/.md/.png go (default: data_dir/backtest).")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Keep models, checks and gate verdicts here (keyed by config "
                                  "and months) so later backtests of other policies replay in seconds.")
    ] = None,
    held_out_from: Annotated[
        str | None, typer.Option("--held-out-from", help="YYYY-MM: report the months from this one on apart, as "
                                 "held out (tune thresholds on the earlier months only).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Replay each month: score the champion on it, check drift, retrain per policy, gate and promote.

    Reports per month the champion's ROC AUC, whether drift was flagged, whether a retrain
    happened and was promoted (a progress bar on a terminal, one line per month otherwise); writes
    a table (CSV + markdown) and a plot of AUC over months.

    Examples:

      kfops backtest --held-out-from 2013-07      # every month of the dataset's window

      kfops backtest --from 2013-02 --to 2013-12 --held-out-from 2013-07

      kfops backtest --from 2013-02 --to 2013-05 --policy drift --policy never --sample 0.1

      kfops backtest --from 2013-02 --to 2013-12 --set retrain.debounce=1 -o docs/backtest
    """
    from kfops.runners.backtest import default_months, run_backtest, split_months

    cfg = cli_config(config, set_)
    on_skip = None
    if from_ is None or to is None:
        first, last = default_months(cfg)
        if from_ is None:  # months of the config's window: from the first that has a champion before it
            def on_skip(month: str, why: str) -> None:
                typer.echo(f"backtest: {month} left out, {why}", err=True)
        from_, to = from_ or first, to or last
        typer.echo(f"backtest: {from_}..{to} (from dataset.start..end; --from and --to choose)", err=True)
    out_dir = output_dir or cfg.data_dir / "backtest"
    # Each month's outcome is reported as it lands: a bar with the month lines above it on a
    # terminal, one line per month otherwise (KFOPS_PROGRESS=plain|rich|off chooses).
    result, paths = run_backtest(cfg, from_, to, policy or list(POLICIES), out_dir, sample=sample, cache_dir=cache_dir,
                                 held_out_from=held_out_from, on_skip=on_skip)
    typer.echo("")
    typer.echo(result.totals().to_string(index=False))
    tuning, held_out = split_months(list(dict.fromkeys(r.month for r in result.months)), held_out_from)
    if tuning and held_out:
        typer.echo(f"\nheld-out months ({held_out[0]}..{held_out[-1]}; thresholds were tuned on the others):")
        typer.echo(result.totals(held_out).to_string(index=False))
    for kind, path in paths.items():
        typer.echo(f"{kind:>8}: {path}")
