"""A made-up online shop, unlike flights: orders by customers at stores, and returns that come later.

Four raw tables, as a shop's data lake might hold them:

- ``customers.csv``: one row per customer, known from ``signup_at``: segment, age (a few unknown), region;
- ``stores.parquet``: one row per store, no timestamp (static): store_type, size_sqm;
- ``orders.parquet``: one row per order at ``ordered_at``: customer, store, amount, category, channel, items;
- ``returns.csv``: one row per returned order at ``returned_at`` (1 to 45 days after it), with a reason.

Whether an order comes back depends on its category, amount and channel, on the customer's segment
and age and on the store's type, under noise: a real signal, spread over the request and both
feature views. Returns after 30 days do not count for a 30-day label, as in a real policy.

The sample data of the ``kfops init`` walkthrough (README, docs/init.md), from the repository root::

    python -m tests.support.shop_data lake                                # 45 days from 2024-03-01
    python -m tests.support.shop_data lake150 --start 2024-01-01 --days 150
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORY_RISK = {"apparel": 1.0, "shoes": 0.7, "electronics": -0.2, "home": -0.8}
SEGMENT_RISK = {"new": 0.6, "regular": 0.0, "vip": -0.6}
STORE_RISK = {"online": 0.7, "mall": 0.0, "outlet": -0.5}
CHANNEL_RISK = {"web": 0.3, "app": 0.0, "store": -0.4}


def generate_shop(folder: Path, start: str = "2024-03-01", days: int = 45, orders_per_day: int = 110,
                  customers: int = 700, stores: int = 12, seed: int = 11) -> dict[str, pd.DataFrame]:
    """Write the four tables into ``folder``; returns them."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start, tz="UTC")
    store_ids = [f"S{i:02d}" for i in range(1, stores + 1)]
    store_types = rng.choice(list(STORE_RISK), size=stores, p=[0.3, 0.45, 0.25])
    store_frame = pd.DataFrame({"store_id": store_ids, "store_type": store_types,
                                "size_sqm": rng.integers(80, 2500, size=stores)})
    customer_ids = [f"C{i:04d}" for i in range(1, customers + 1)]
    signup = t0 - pd.to_timedelta(rng.integers(0, 400 * 24, size=customers), unit="h")
    late = rng.random(customers) < 0.15  # some sign up during the window
    signup = signup.where(~late, t0 + pd.to_timedelta(rng.integers(0, days * 12, size=customers), unit="h"))
    segments = rng.choice(list(SEGMENT_RISK), size=customers, p=[0.3, 0.55, 0.15])
    ages = rng.normal(40, 12, size=customers).clip(18, 85).round(0)
    ages[rng.random(customers) < 0.03] = np.nan  # age unknown for a few
    customer_frame = pd.DataFrame({
        "customer_id": customer_ids,
        "signup_at": signup.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "segment": segments,
        "age": ages,
        "region": rng.choice(["north", "south", "east", "west"], size=customers),
    })

    n = days * orders_per_day
    ordered = t0 + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, size=n)).round(0), unit="s")
    signup_ts = pd.DatetimeIndex(signup)
    order_customer = np.empty(n, dtype=object)
    for i, moment in enumerate(ordered):
        eligible = np.flatnonzero(signup_ts <= moment)
        order_customer[i] = customer_ids[rng.choice(eligible)]
    categories = rng.choice(list(CATEGORY_RISK), size=n, p=[0.35, 0.2, 0.2, 0.25])
    channels = rng.choice(list(CHANNEL_RISK), size=n, p=[0.5, 0.3, 0.2])
    order_store = rng.choice(store_ids, size=n)
    amount = np.round(rng.gamma(2.2, 35.0, size=n) + 5, 2)
    items = rng.integers(1, 6, size=n)
    order_frame = pd.DataFrame({
        "order_id": [f"O{i:06d}" for i in range(1, n + 1)],
        "customer_id": order_customer,
        "store_id": order_store,
        "ordered_at": ordered,
        "amount": amount,
        "category": categories,
        "channel": channels,
        "items": items,
    })

    customer_info = customer_frame.set_index("customer_id")
    store_info = store_frame.set_index("store_id")
    age = customer_info.loc[order_customer, "age"].fillna(40).to_numpy()
    risk = (-2.4
            + np.array([CATEGORY_RISK[c] for c in categories])
            + np.array([CHANNEL_RISK[c] for c in channels])
            + np.array([SEGMENT_RISK[s] for s in customer_info.loc[order_customer, "segment"]])
            + np.array([STORE_RISK[s] for s in store_info.loc[order_store, "store_type"]])
            + 0.006 * (amount - 80) - 0.02 * (age - 40))
    returned = rng.random(n) < 1 / (1 + np.exp(-risk))
    delay_days = rng.gamma(2.0, 7.0, size=n).clip(1, 45)
    returns = order_frame.loc[returned, ["order_id"]].copy()
    returns["returned_at"] = (ordered[returned] + pd.to_timedelta(delay_days[returned] * 86400, unit="s").round("s")
                              ).strftime("%Y-%m-%dT%H:%M:%SZ")
    returns["reason"] = rng.choice(["size", "damaged", "changed_mind", "late"], size=int(returned.sum()))

    folder.mkdir(parents=True, exist_ok=True)
    customer_frame.to_csv(folder / "customers.csv", index=False)
    store_frame.to_parquet(folder / "stores.parquet", index=False)
    order_frame.to_parquet(folder / "orders.parquet", index=False)
    returns.to_csv(folder / "returns.csv", index=False)
    return {"customers": customer_frame, "stores": store_frame, "orders": order_frame, "returns": returns}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tests.support.shop_data FOLDER [--start ...] [--days ...]``: write the four tables."""
    defaults = generate_shop.__defaults__ or ()
    names = ("start", "days", "orders_per_day", "customers", "stores", "seed")
    default = dict(zip(names, defaults, strict=True))
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.shop_data",
        description="Write a made-up shop's raw tables (orders, customers, stores, returns) into FOLDER, "
                    "the sample data of the kfops init walkthrough.")
    parser.add_argument("folder", type=Path, help="where the four files go (created if missing)")
    parser.add_argument("--start", default=default["start"], help="first day of orders, YYYY-MM-DD (default: %(default)s)")
    parser.add_argument("--days", type=int, default=default["days"], help="days of orders (default: %(default)s)")
    parser.add_argument("--orders-per-day", type=int, default=default["orders_per_day"], help="(default: %(default)s)")
    parser.add_argument("--customers", type=int, default=default["customers"], help="(default: %(default)s)")
    parser.add_argument("--stores", type=int, default=default["stores"], help="(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=default["seed"], help="(default: %(default)s)")
    args = parser.parse_args(argv)
    tables = generate_shop(args.folder, start=args.start, days=args.days, orders_per_day=args.orders_per_day,
                           customers=args.customers, stores=args.stores, seed=args.seed)
    files = {"customers": "customers.csv", "stores": "stores.parquet", "orders": "orders.parquet",
             "returns": "returns.csv"}
    for name, frame in tables.items():
        print(f"wrote {args.folder / files[name]}  ({len(frame):,} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
