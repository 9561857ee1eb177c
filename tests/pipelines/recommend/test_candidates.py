"""Candidate models on small hand-made histories whose right answers are obvious."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from pipelines.config import AlsConfig
from pipelines.recommend.candidates import als, buy_again, co_occurrence, fit_als, popular, top_items

AS_OF = datetime(2026, 11, 1)
LOG = "user_id string, item_id string, weight double, occurred_at timestamp, basket_id string, kind string"


def _log(spark, rows):
    return spark.createDataFrame(rows, LOG)


def _buy(user, item, days_ago=1, basket=None, weight=1.0):
    return (user, item, weight, AS_OF - timedelta(days=days_ago), basket or f"{user}-{days_ago}", "purchase")


def _lists(frame):
    """user -> items best first; equal scores in item id order, as the models rank them."""
    result: dict[str, list[str]] = {}
    for row in sorted(frame.collect(), key=lambda row: (row.user_id, -row.score, row.item_id)):
        result.setdefault(row.user_id, []).append(row.item_id)
    return result


def _users(spark, *names):
    return spark.createDataFrame([(name,) for name in names], "user_id string")


def test_two_taste_groups_each_get_their_own_groups_items_from_als(spark):
    # Gardeners buy from g0..g5, cooks from k0..k5; each person has four of their six.
    rows = []
    for group, prefix in (("garden", "g"), ("kitchen", "k")):
        for person in range(6):
            for item in range(6):
                if (item + person) % 3 != 0:
                    rows.append(_buy(f"{group}-{person}", f"{prefix}{item}", days_ago=item + 1))
    log = _log(spark, rows)
    fitted = fit_als(log, AS_OF, 90.0, AlsConfig(rank=4, max_iter=8, reg_param=0.01, alpha=10.0, seed=1, blocks=2))
    seen = log.select("user_id", "item_id")
    lists = _lists(als(fitted, log, log.select("user_id").distinct(), n=2, seen=seen, over_fetch=6))
    assert len(lists) == 12
    for user, items in lists.items():
        prefix = "g" if user.startswith("garden") else "k"
        assert items and all(item.startswith(prefix) for item in items), (user, items)
    reasons = {row.reason for row in als(fitted, log, _users(spark, "garden-0"), n=2).collect()}
    assert reasons == {"because_you_bought"}


def test_top_items_are_the_highest_dot_products_as_spark_ranks_them(spark):
    rng = random.Random(5)
    rows = [_buy(f"u{user}", f"p{rng.randrange(40)}", days_ago=rng.randrange(1, 60)) for user in range(30)
            for _ in range(rng.randrange(2, 9))]
    fitted = fit_als(_log(spark, rows), AS_OF, 90.0,
                     AlsConfig(rank=4, max_iter=5, reg_param=0.1, alpha=5.0, seed=3, blocks=2))
    model = fitted.model
    users = {row.id: row.features for row in model.userFactors.collect()}
    items = {row.id: row.features for row in model.itemFactors.collect()}
    # The oracle: every user's rating of every item as a plain sum of products.
    expected = {user: sorted(((sum(a * b for a, b in zip(features, factors, strict=True)), item)
                              for item, factors in items.items()), reverse=True)
                for user, features in users.items()}
    asked = sorted(users)[:20]
    subset = spark.createDataFrame([(index,) for index in [*asked, 999]], "user_index int")  # 999: unknown

    for n in (5, len(items) + 3):
        got: dict[int, list[tuple[int, float]]] = {}
        for row in top_items(model, subset, n).collect():
            got.setdefault(row.user_index, []).append((row.item_index, row.rating))
        assert sorted(got) == asked  # the unknown user gets nothing
        for user, ranked in got.items():
            assert len(ranked) == min(n, len(items))
            truth = {item: rating for rating, item in expected[user]}
            ratings = [rating for _, rating in ranked]
            assert ratings == sorted(ratings, reverse=True), user  # best first
            best = [rating for rating, _ in expected[user][:len(ranked)]]
            assert all(abs(a - b) < 1e-5 for a, b in zip(ratings, best, strict=True)), user  # the highest ones
            assert all(abs(truth[item] - rating) < 1e-5 for item, rating in ranked), user
    # Spark's own recommendForUserSubset agrees on the ratings of each user's top five.
    spark_top = {row.user_index: [r.rating for r in row.recommendations]
                 for row in model.recommendForUserSubset(subset, 5).collect()}
    ours: dict[int, list[float]] = {}
    for row in top_items(model, subset, 5).collect():
        ours.setdefault(row.user_index, []).append(row.rating)
    assert sorted(ours) == sorted(spark_top)
    assert all(abs(a - b) < 1e-5 for user in ours for a, b in zip(ours[user], spark_top[user], strict=True))
    assert top_items(model, subset, 0).count() == 0


def test_buy_again_ranks_repeat_purchases_by_frequency_and_recency(spark):
    log = _log(spark, [
        _buy("ann", "tea", 1), _buy("ann", "tea", 10), _buy("ann", "tea", 20),  # three times
        _buy("ann", "mug", 2), _buy("ann", "mug", 3),                            # twice, lately
        _buy("ann", "pot", 200), _buy("ann", "pot", 210),                        # twice, long ago
        ("ann", "vase", 1.0, AS_OF, "v", "view"),                               # looked, never bought
        _buy("bob", "tea", 1),
    ])
    ranked = buy_again(log, _users(spark, "ann"), AS_OF, 90.0, n=10)
    assert _lists(ranked) == {"ann": ["tea", "mug", "pot"]}
    assert {row.reason for row in ranked.collect()} == {"buy_again"}


def test_popular_is_per_segment_with_a_fallback_and_leaves_out_what_a_user_has(spark):
    log = _log(spark, [
        _buy("a1", "rose"), _buy("a2", "rose"), _buy("a2", "spade"), _buy("a3", "tulip"),
        _buy("b1", "pan"), _buy("b2", "pan"), _buy("b2", "knife"), _buy("b3", "whisk"),
    ])
    segments = spark.createDataFrame([("a1", "garden"), ("a2", "garden"), ("a3", "garden"), ("b1", "kitchen"),
                                      ("b2", "kitchen"), ("b3", "kitchen"), ("new", "brand_new_segment"),
                                      # Listed twice: the first segment by name counts; a null is none.
                                      ("b3", "zoo"), ("nobody", None)],
                                     "user_id string, segment string")
    seen = log.select("user_id", "item_id")
    lists = _lists(popular(log, _users(spark, "a1", "b3", "new", "nobody"), AS_OF, 90.0, n=2, seen=seen,
                           segments=segments))
    assert lists["a1"] == ["spade", "tulip"]        # rose is hers already
    assert lists["b3"] == ["pan", "knife"]
    # No history in its segment, or no segment at all: the overall list.
    assert lists["new"] == lists["nobody"] == ["pan", "rose"]


def test_co_occurrence_suggests_what_is_bought_with_what_the_user_has(spark):
    log = _log(spark, [
        _buy("x", "tea", basket="o1"), _buy("x", "milk", basket="o1"),
        _buy("y", "tea", basket="o2"), _buy("y", "milk", basket="o2"), _buy("y", "cake", basket="o2"),
        _buy("z", "tea", basket="o3"), _buy("z", "milk", basket="o3"),
        _buy("w", "bolts", basket="o4"), _buy("w", "nuts", basket="o4"),
        _buy("ann", "tea", basket="o5"),
        # One huge basket of everything is left out of the similarities.
        *[_buy("shop", item, basket="bulk") for item in ("tea", "bolts", "nuts", "cake", "milk", "a", "b")],
    ])
    ranked = co_occurrence(log, _users(spark, "ann"), AS_OF, 90.0, n=5, max_basket_items=4, neighbours=10)
    assert _lists(ranked) == {"ann": ["milk", "cake"]}
    assert {row.reason for row in ranked.collect()} == {"bought_together"}
