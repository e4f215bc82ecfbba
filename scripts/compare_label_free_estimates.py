"""Compare label-free CBPE calibrations on the backtest's bank (docs/backtest.md, "Label-free CBPE").

For every (model month, later month) pair of a cached ``kfops backtest`` bank, each candidate
estimates the month's ROC AUC from the model's scores on it, calibrated on labelled rows the model
did not train on and that are older than the month: the previous month (labels as known at the
check), else the model's test split; the pooled candidates use several such sources (the test
split and every month between the model's and the checked one). No label of the checked month is used. Prints each
candidate's mean absolute error against the realised AUC over the tuning months' pairs (later month
February to June, what a choice may be made on), over all pairs, and over the ``default`` policy's
months as its backtest CSV lists them.

    kfops backtest --from 2013-02 --to 2013-12 --set data_dir=/tmp/b/data --cache-dir /tmp/b/cache -o /tmp/b/out
    python scripts/compare_label_free_estimates.py --cache-dir /tmp/b/cache --set data_dir=/tmp/b/data \\
        --csv /tmp/b/out/backtest.csv
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def pairs(cfg, cache):
    """Each (model month, month): the month's scores and labels, and the calibration rows."""

    from kfops.core.model import predict_proba
    from kfops.core.tables import read_parquet
    from kfops.runners import backtest as bt
    from kfops.training.challenger import split_window

    frame = read_parquet(cache / "frame.parquet")
    by_month = {m: p for m, p in frame.groupby(bt.MONTH_COLUMN, sort=True)}
    bank = bt.ModelBank(cfg, by_month, cache / "work", cache_dir=cache)
    label, months = cfg.dataset.label, sorted(by_month)
    agreements = _AgreementBank(bank, by_month, months, cfg)
    for model_month in months[:-1]:
        model = bank.trained(model_month).model
        importance = bank.trained(model_month).profile["importance"]["values"]
        test = split_window(bank.training_rows(model_month), cfg)["test"]
        for month in (m for m in months if m > model_month):
            current = by_month[month]
            recent = bank._recent(model_month, month)
            calibration = test if recent is None else recent[recent[label].notna()]
            # Every labelled source the model did not train on, oldest first: its test split,
            # then each month between it and the checked one (labels as known at the check).
            earlier = [bt.labels_known_at(by_month[m], cfg, bt.check_time(month, cfg))
                       for m in months if model_month < m < month]
            sources = [test] + [part[part[label].notna()] for part in earlier]
            previous = months[months.index(month) - 1]
            other = previous if previous != model_month else (
                months[months.index(model_month) - 1] if months.index(model_month) > 0 else None)
            change = None if other is None else _agreement_change(model, bank.trained(other).model, current,
                                                                  by_month[previous])
            yield {"agreement_change": change,"model": model_month, "month": month, "importance": importance,
                   "s": predict_proba(model, current), "y": current[label].to_numpy().astype(int),
                   "X": current, "rs": predict_proba(model, calibration),
                   "ry": calibration[label].to_numpy().astype(int), "RX": calibration,
                   "sources": [(predict_proba(model, part), part[label].to_numpy().astype(int))
                               for part in sources],
                   "line": agreements.line(model_month, month)}


def _agreement_change(model, other, month, before) -> float:
    """How much less ``model`` and ``other`` (the newest other model) agree on ``month`` than on
    the month ``before`` it: the change of the rank correlation of their scores."""
    from scipy.stats import spearmanr

    from kfops.core.model import predict_proba

    def agreement(rows):
        return spearmanr(predict_proba(model, rows), predict_proba(other, rows)).statistic

    return float(agreement(month) - agreement(before))


class _AgreementBank:
    """Agreement on the line (Baek et al., 2022), its inputs for one (model, checked month) pair.

    At the check of ``month`` the models that exist are those trained on earlier months. The
    agreement of an ordered pair (i, j) of them on a set of rows is a soft-label AUC: the expected
    ROC AUC of model i's scores when each row is positive with model j's calibrated probability
    (``expected_roc_auc``, as the built CBPE), j calibrated by Platt on the labelled rows the built
    estimate uses for j at this check. ID rows: the estimated model's calibration rows (labelled,
    older than the month); OOD rows: the month's rows with its label column dropped, so no label of
    the checked month can reach an agreement (the models' encoders would raise if one needed it)."""

    def __init__(self, bank, by_month, months, cfg) -> None:
        from kfops.training.challenger import split_window

        self.bank, self.months, self.label, self.cfg = bank, months, cfg.dataset.label, cfg
        self.models = {m: bank.trained(m).model for m in months[:-1]}
        self.tests = {m: split_window(bank.training_rows(m), cfg)["test"] for m in months[:-1]}
        self.unlabelled = {m: part.drop(columns=[self.label]) for m, part in by_month.items()}
        self._scores, self._calibrators, self._agreements = {}, {}, {}

    def calibration(self, model_month, month):
        """The rows the built estimate calibrates ``model_month``'s model on at ``month``'s check:
        (a key naming them, the rows, the month whose rows they are)."""
        recent = self.bank._recent(model_month, month)
        if recent is None:
            return ("test", model_month), self.tests[model_month], self.bank.source_month(model_month)
        previous = self.months[self.months.index(month) - 1]
        return ("recent", month), recent[recent[self.label].notna()], previous

    def scores(self, model_month, key, rows):
        from kfops.core.model import predict_proba

        if (model_month, key) not in self._scores:
            self._scores[(model_month, key)] = predict_proba(self.models[model_month], rows)
        return self._scores[(model_month, key)]

    def calibrator(self, model_month, month):
        from kfops.core import monitoring as mon

        if (model_month, month) not in self._calibrators:
            key, rows, _ = self.calibration(model_month, month)
            self._calibrators[(model_month, month)] = mon.fit_calibrator(
                rows[self.label].to_numpy().astype(int), self.scores(model_month, key, rows))
        return self._calibrators[(model_month, month)]

    def agreement(self, i, j, month, key, rows) -> float:
        from kfops.core import monitoring as mon

        if (i, j, month, key) not in self._agreements:
            soft = mon.calibrate(self.calibrator(j, month), self.scores(j, key, rows))
            self._agreements[(i, j, month, key)] = mon.expected_roc_auc(self.scores(i, key, rows), soft)
        return self._agreements[(i, j, month, key)]

    def line(self, model_month, month):
        """The estimated model's AUC on its ID rows, and (i, j, agreement ID, agreement OOD) for every
        ordered pair of distinct models trained before ``month``; ``on_id``: the models whose training
        rows are among the ID rows (their agreement there is in-sample)."""
        from sklearn.metrics import roc_auc_score

        key, rows, rows_month = self.calibration(model_month, month)
        existing = [m for m in self.months[:-1] if m < month]
        ood_key, ood = ("month", month), self.unlabelled[month]
        on_id = {m for m in existing if self.bank.source_month(m) == rows_month and not (
            key[0] == "test" and m == model_month)}
        return {"auc_id": float(roc_auc_score(rows[self.label].to_numpy().astype(int),
                                              self.scores(model_month, key, rows))),
                "on_id": on_id,
                "agreements": [(i, j, self.agreement(i, j, month, key, rows), self.agreement(i, j, month, ood_key, ood))
                               for i in existing for j in existing if i != j]}


FALLBACKS: dict[str, list[tuple[str, str]]] = {}


def candidates():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from kfops.core import monitoring as mon

    def expected(pair, probabilities):
        return mon.expected_roc_auc(pair["s"], probabilities)

    def platt(pair):  # what kfops builds
        return expected(pair, mon.calibrate(mon.fit_calibrator(pair["ry"], pair["rs"]), pair["s"]))

    def fitted(design, last=None, half_life=None):
        """Calibrate with ``design`` on the usual rows, or on the ``last`` sources pooled, each
        weighted by 0.5 ** (age in sources / ``half_life``) when given."""
        def estimate(pair):
            rs, ry, weight = pair["rs"], pair["ry"], None
            if last is not None:
                chosen = pair["sources"][-last:]
                rs, ry = np.concatenate([s for s, _ in chosen]), np.concatenate([y for _, y in chosen])
                if half_life is not None:
                    weight = np.concatenate([np.full(len(s), 0.5 ** ((len(chosen) - 1 - age) / half_life))
                                             for age, (s, _) in enumerate(chosen)])
            model = LogisticRegression(C=1e6, max_iter=1000).fit(design(rs), ry, sample_weight=weight)
            return expected(pair, model.predict_proba(design(pair["s"]))[:, 1])
        return estimate

    def logit(s):
        return _logit(s)[:, None]

    def closest(pair):  # the source whose scores are distributed most like the month's (KS)
        from scipy.stats import ks_2samp

        s, y = min(pair["sources"], key=lambda source: ks_2samp(source[0], pair["s"]).statistic)
        return expected(pair, mon.calibrate(mon.fit_calibrator(y, s), pair["s"]))

    def slope_pooled(pair):
        """Recalibration in the large: the slope from every source pooled (steadier), the intercept
        refitted on the newest source with that slope fixed (the base rate moves by month)."""
        from scipy.optimize import brentq

        pooled = LogisticRegression(C=1e6, max_iter=1000).fit(
            _logit(np.concatenate([s for s, _ in pair["sources"]]))[:, None],
            np.concatenate([y for _, y in pair["sources"]]))
        slope = float(pooled.coef_[0][0])
        newest = slope * _logit(pair["rs"])
        intercept = brentq(lambda b: float((1 / (1 + np.exp(-(newest + b)))).sum() - pair["ry"].sum()), -20, 20)
        return expected(pair, 1 / (1 + np.exp(-(slope * _logit(pair["s"]) + intercept))))

    def averaged(pair):  # the mean of one Platt estimate per source
        return float(np.mean([expected(pair, mon.calibrate(mon.fit_calibrator(y, s), pair["s"]))
                              for s, y in pair["sources"]]))

    def beta(s):
        s = np.clip(s, 1e-6, 1 - 1e-6)
        return np.column_stack([np.log(s), -np.log(1 - s)])

    def with_features(k):
        def estimate(pair):
            ranked = sorted(pair["importance"], key=lambda c: -pair["importance"][c])
            numeric = [c for c in ranked if c in pair["RX"] and np.issubdtype(pair["RX"][c].dtype, np.number)][:k]

            def design(frame, scores):
                values = frame[numeric].astype("float64")
                return np.column_stack([_logit(scores), values.fillna(values.median()).to_numpy()])

            train = design(pair["RX"], pair["rs"])
            scaler = StandardScaler().fit(train)
            model = LogisticRegression(max_iter=1000).fit(scaler.transform(train), pair["ry"])
            return expected(pair, model.predict_proba(scaler.transform(design(pair["X"], pair["s"])))[:, 1])
        return estimate

    def binned(n):
        def estimate(pair):
            edges = np.quantile(pair["rs"], np.linspace(0, 1, n + 1))
            edges[0], edges[-1] = -1.0, 2.0
            bins = np.digitize(pair["rs"], edges) - 1
            rate = np.array([(pair["ry"][bins == i].sum() + 0.5) / ((bins == i).sum() + 1) for i in range(n)])
            centre = np.array([np.median(pair["rs"][bins == i]) for i in range(n)])
            return expected(pair, np.interp(pair["s"], centre, rate))
        return estimate

    def persistence(pair):  # the calibration rows' realised AUC
        return roc_auc_score(pair["ry"], pair["rs"])

    def blend(weight):
        return lambda pair: weight * platt(pair) + (1 - weight) * persistence(pair)

    def bias_corrected(pair):  # minus CBPE's own error on the calibration rows
        calibrator = mon.fit_calibrator(pair["ry"], pair["rs"])
        own = mon.expected_roc_auc(pair["rs"], mon.calibrate(calibrator, pair["rs"]))
        return platt(pair) - (own - persistence(pair))

    def on_the_line(name, transform, inverse, keep=lambda pair, i, j: True, slope_one=False):
        """probit/logit(AUC on the month) = a * probit/logit(AUC on the ID rows) + b, (a, b) the
        least-squares line of the pairs' agreements on the month against theirs on the ID rows
        (``slope_one``: a = 1, b their mean difference). Under 3 pairs: the built estimate."""
        FALLBACKS[name] = []

        def estimate(pair):
            line = pair["line"]
            chosen = np.array([(inside, outside) for i, j, inside, outside in line["agreements"]
                               if keep(pair, i, j)]).reshape(-1, 2)
            if len(chosen) < 3:
                FALLBACKS[name].append((pair["model"], pair["month"]))
                return platt(pair)
            x, y = transform(chosen[:, 0]), transform(chosen[:, 1])
            a, b = (1.0, float(np.mean(y - x))) if slope_one else np.polyfit(x, y, 1)
            return float(inverse(a * transform(line["auc_id"]) + b))
        return estimate

    from scipy.stats import norm

    def probit(p):
        return norm.ppf(np.clip(p, 1e-6, 1 - 1e-6))

    def expit(z):
        return 1 / (1 + np.exp(-z))

    def with_model(pair, i, j):
        return pair["model"] in (i, j)

    def not_trained_on_id(pair, i, j):
        return not pair["line"]["on_id"] & {i, j}

    line_probit = on_the_line("agreement on the line, probit", probit, norm.cdf)
    lines = {
        "agreement on the line, probit": line_probit,
        "agreement on the line, logit": on_the_line("agreement on the line, logit", _logit, expit),
        "mean of line (probit) and built": lambda pair: 0.5 * (line_probit(pair) + platt(pair)),
        "line, probit, pairs with the model": on_the_line("line, probit, pairs with the model", probit, norm.cdf,
                                                           keep=with_model),
        "line, probit, no model trained on ID": on_the_line("line, probit, no model trained on ID", probit,
                                                             norm.cdf, keep=not_trained_on_id),
        "line, probit, slope 1": on_the_line("line, probit, slope 1", probit, norm.cdf, slope_one=True),
    }

    return {
        "Platt on logit(score) (built)": platt,
        "beta calibration": fitted(beta),
        "quadratic in logit(score)": fitted(lambda s: np.column_stack([_logit(s), _logit(s) ** 2])),
        "Platt + top-1 numeric feature": with_features(1),
        "Platt + top-3 numeric features": with_features(3),
        "binned, 10 quantiles": binned(10),
        "binned, 20 quantiles": binned(20),
        "persistence (calibration rows' AUC)": persistence,
        "0.5 Platt + 0.5 persistence": blend(0.5),
        "0.75 Platt + 0.25 persistence": blend(0.75),
        "Platt minus its own error there": bias_corrected,
        "Platt, last 2 sources pooled": fitted(logit, last=2),
        "Platt, all sources pooled": fitted(logit, last=99),
        "Platt, all sources, half-life 1": fitted(logit, last=99, half_life=1),
        "Platt, all sources, half-life 0.5": fitted(logit, last=99, half_life=0.5),
        "Platt, mean of per-source estimates": averaged,
        "Platt, the source closest in scores": closest,
        "beta, last 2 sources pooled": fitted(beta, last=2),
        "beta, all sources pooled": fitted(beta, last=99),
        "Platt slope pooled, intercept newest": slope_pooled,
    } | lines


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from kfops.cli.options import cli_config
    from kfops.runners import backtest as bt

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--csv", type=Path, help="the backtest's CSV, for the default policy's months")
    parser.add_argument("--first", default="2013-02")
    parser.add_argument("--last", default="2013-12")
    parser.add_argument("--held-out-from", default="2013-07", help="pairs whose later month is earlier are tuning pairs")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    cfg = cli_config(None, args.set)
    cache = args.cache_dir / bt.cache_key(cfg, args.first, args.last, None)
    default = set()
    if args.csv:
        with args.csv.open() as rows:
            default = {(r["champion_month"], r["month"]) for r in csv.DictReader(rows) if r["policy"] == "default"}
    bank = list(pairs(cfg, cache))
    realised = [roc_auc_score(p["y"], p["s"]) for p in bank]
    first_held_out = bt.parse_month(args.held_out_from)
    tuning = [bt.parse_month(p["month"]) < first_held_out for p in bank]
    print(f"{len(bank)} pairs, {sum(tuning)} with the later month in February to June")
    print(f"{'candidate':40s} {'tuning pairs':>12s} {'all pairs':>10s} {'default':>8s}")
    built, signed_by_name = None, {}
    for name, estimate in candidates().items():
        signed = np.array([estimate(p) for p in bank]) - realised
        errors = np.abs(signed)
        built = signed if built is None else built
        signed_by_name[name] = signed
        on_default = [e for e, p in zip(errors, bank, strict=True) if (p["model"], p["month"]) in default]
        shown = f"{np.mean(on_default):.4f}" if on_default else "-"
        print(f"{name:40s} {errors[tuning].mean():12.4f} {errors.mean():10.4f} {shown:>8s}")
    print_agreement_line(signed_by_name, bank, default, tuning)
    print_uncertainty(np.abs(built), bank, default)
    print_error_predictors(built, bank, tuning, default)


def print_agreement_line(signed_by_name, bank, default, tuning, draws: int = 10_000) -> None:
    """The agreement-on-the-line candidates: the pairs that fell back to the built estimate (under 3
    pairs of models), how often each beats the built estimate's MAE when the checked months are
    resampled (paired), and each one's signed error on the default's months next to the built's."""
    built = np.abs(signed_by_name["Platt on logit(score) (built)"])
    months = np.array([p["month"] for p in bank])
    for scope, keep in (("tuning pairs", np.asarray(tuning)), ("all pairs", np.ones(len(bank), bool))):
        rng = np.random.default_rng(0)
        chosen = sorted(set(months[keep]))
        picks = [np.concatenate([np.flatnonzero(keep & (months == m)) for m in rng.choice(chosen, len(chosen))])
                 for _ in range(draws)]
        for name in (n for n in signed_by_name if "line" in n):
            errors = np.abs(signed_by_name[name])
            differences = np.array([errors[i].mean() - built[i].mean() for i in picks])
            low, high = np.quantile(differences, [0.025, 0.975])
            print(f"{scope}, {name} minus built: {errors[keep].mean() - built[keep].mean():+.4f}, resampled by "
                  f"month 95% [{low:+.4f}, {high:+.4f}], share of draws below built {np.mean(differences < 0):.2f}")
    for name, pairs_fell_back in FALLBACKS.items():
        fell_back = sorted(set(pairs_fell_back))
        print(f"{name}: {len(fell_back)} of {len(bank)} pairs fell back to the built estimate "
              f"({', '.join(f'{m}->{t}' for m, t in fell_back)})")
    names = ["Platt on logit(score) (built)"] + [n for n in signed_by_name if "line" in n]
    chosen = [i for i, p in enumerate(bank) if (p["model"], p["month"]) in default]
    print("signed error on the default's months: " + " | ".join(names))
    for i in chosen:
        print(f"  {bank[i]['model']} -> {bank[i]['month']} ({len(bank[i]['line']['agreements']):3d} pairs): "
              + " ".join(f"{signed_by_name[n][i]:+.4f}" for n in names))


def print_error_predictors(signed_errors, bank, tuning, default) -> None:
    """Whether a label-free signal foretells the built estimate's error: the rank correlation of the
    error with how far the month's scores moved from the calibration rows' scores."""
    from scipy.stats import ks_2samp, spearmanr

    signals = {
        "KS statistic of the scores": [ks_2samp(p["rs"], p["s"]).statistic for p in bank],
        "mean score shift": [p["s"].mean() - p["rs"].mean() for p in bank],
        "spread ratio of logit(score)": [_logit(p["s"]).std() / _logit(p["rs"]).std() for p in bank],
    }
    for name, values in signals.items():
        rho, p_value = spearmanr(values, signed_errors)
        print(f"built's error against {name}: Spearman {rho:+.2f} (p {p_value:.3f})")
    agreeing = [i for i, p in enumerate(bank) if p["agreement_change"] is not None]
    change = np.array([bank[i]["agreement_change"] for i in agreeing])
    errors = np.asarray(signed_errors)[agreeing]
    rho, p_value = spearmanr(change, errors)
    print(f"built's error against the change in agreement with the newest other model: Spearman {rho:+.2f} "
          f"(p {p_value:.4f}, {len(agreeing)} pairs)")
    # The error as a multiple of that change, learned at each check from the pairs of earlier months
    # only (their labels exist by then); the month's estimate minus shrink * slope * change.
    months = [bank[i]["month"] for i in agreeing]
    for shrink in (1.0, 0.5):
        corrected = []
        for j, month in enumerate(months):
            past = np.array([m < month for m in months])
            slope = 0.0 if past.sum() < 3 else shrink * (change[past] @ errors[past]) / (change[past] @ change[past])
            corrected.append(errors[j] - slope * change[j])
        shown = []
        for name, chosen in (("tuning", [tuning[i] for i in agreeing]),
                             ("all", [True] * len(agreeing)),
                             ("default", [(bank[i]["model"], bank[i]["month"]) in default for i in agreeing])):
            keep = np.array(chosen)
            shown.append(f"{name} {np.mean(np.abs(np.array(corrected)[keep])):.4f} "
                         f"(built {np.mean(np.abs(errors[keep])):.4f})")
        print(f"  corrected online (shrink {shrink}), MAE on the pairs with another model: " + ", ".join(shown))


def print_uncertainty(errors, bank, default, draws: int = 10_000) -> None:
    """How far the built estimate's MAE could move by chance: a bootstrap of the default's months,
    and of all pairs resampled by checked month (a month's pairs share its concept shift)."""
    rng = np.random.default_rng(0)
    on_default = np.array([e for e, p in zip(errors, bank, strict=True) if (p["model"], p["month"]) in default])
    if len(on_default):
        means = np.array([rng.choice(on_default, len(on_default)).mean() for _ in range(draws)])
        low, high = np.quantile(means, [0.025, 0.975])
        print(f"built, default's months: MAE {on_default.mean():.4f}, bootstrap SE {means.std():.4f}, "
              f"95% [{low:.4f}, {high:.4f}], share of draws <= 0.02: {np.mean(means <= 0.02):.2f}")
    months = sorted({p["month"] for p in bank})
    by_month = {m: errors[[p["month"] == m for p in bank]] for m in months}
    means = np.array([np.concatenate([by_month[m] for m in rng.choice(months, len(months))]).mean()
                      for _ in range(draws)])
    low, high = np.quantile(means, [0.025, 0.975])
    print(f"built, all pairs: MAE {errors.mean():.4f}, bootstrap by month SE {means.std():.4f}, 95% [{low:.4f}, {high:.4f}]")


if __name__ == "__main__":
    main()
