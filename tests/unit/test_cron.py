"""One cron check for both schedulers: `kfops schedule --local` (croniter) and a KFP recurring run
(robfig/cron, six fields with seconds first). What either would refuse, misread or never fire is
refused up front, naming the cron."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from kfops.core.cron import check_cron, to_kfp_cron
from kfops.errors import EXIT_USAGE, ConfigError

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("given", "normalised", "kfp"), [
    ("0 3 * * *", "0 3 * * *", "0 0 3 * * *"),
    ("  */15   *  * * 1-5 ", "*/15 * * * 1-5", "0 */15 * * * 1-5"),
    ("*/5 * * * * *", "*/5 * * * * *", "*/5 * * * * *"),
    ("0 0 29 2 *", "0 0 29 2 *", "0 0 0 29 2 *"),  # a leap day comes
    ("0 9 * JUL WED", "0 9 * JUL WED", "0 0 9 * JUL WED"),  # names hold an L and a W, not croniter's L and W
    ("0 0 1 * SUN,6", "0 0 1 * SUN,6", "0 0 0 1 * SUN,6"),
    ("@Daily", "@daily", "@daily"),
])
def test_a_cron_both_schedulers_read_passes(given, normalised, kfp):
    assert check_cron(given, NOW) == normalised
    assert to_kfp_cron(given) == kfp


@pytest.mark.parametrize(("cron", "problem"), [
    ("0 0 30 2 *", "never fires"),  # was `started`, then an unexpected CroniterBadDateError at the first tick
    ("0 0 31 4 *", "never fires"),
    ("0 3 * * * * *", "7 fields"),  # croniter reads a year in a seventh field; KFP does not
    ("* * *", "3 fields"),
    ("61 * * * *", "out of range"),  # was sent to KFP as `0 61 * * * *`
    ("bad bad bad bad bad", "bad bad bad bad bad"),
    ("0 0 L * *", "'L'"),
    ("0 0 15W * *", "'15W'"),
    ("0 0 * * 5#3", "'#'"),
    ("0 0 * * 7", "0-6"),
    ("@every 1h", "unknown descriptor"),
])
def test_a_cron_either_scheduler_would_refuse_or_never_fire_is_refused_naming_it(cron, problem):
    for check in (lambda: check_cron(cron, NOW), lambda: to_kfp_cron(cron)):
        with pytest.raises(ConfigError, match=re.escape(f"invalid cron '{cron}'")) as err:
            check()
        assert problem in str(err.value), str(err.value)
        assert err.value.exit_code == EXIT_USAGE
        assert "5 fields 'min hour dom month dow'" in err.value.hint
