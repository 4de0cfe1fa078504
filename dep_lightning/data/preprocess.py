"""DPL-style preprocessing: raw reviews -> DPL-format train/val/test rows.

The steps and default thresholds follow how DPL built its benchmark from Amazon
Reviews 2023, per category:

1. reviews need text of at least ``min_text_chars`` characters;
2. items need a description of ``min/max_description_chars`` (skipped without metadata);
3. each user's reviews are deduplicated by item and by text, keeping the newest;
4. to a fixed point: items need ``min_item_users`` distinct reviewers, users need
   ``min_user_reviews``..``max_user_reviews`` reviews;
5. per user (time order, ``schema.time_order_key``) the last ``n_train_targets + 2``
   reviews are targets: train rows use the first ``n_train_targets`` (profile = all
   older reviews), val the next, test the last;
6. profiles keep only items with at least ``min_item_profile_reviewers`` distinct users
   in the *profile pool* — every review except the users' val and test targets, so no
   evaluation target influences the restriction; users need ``min_profile_reviews``
   such reviews in their longest (test) profile.

Every removal is counted in a :class:`PreprocessReport`; nothing is dropped silently.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

from dep_lightning.data.errors import ConfigError
from dep_lightning.data.schema import DPLRow, Item, PreparedData, Review, time_order_key


@dataclass(frozen=True)
class Thresholds:
    """Preprocessing thresholds; the defaults are DPL's."""

    min_text_chars: int = 200
    #: Bounds on the item description length; ``None`` disables the rule (no metadata).
    min_description_chars: int | None = 100
    max_description_chars: int | None = 2000
    min_item_users: int = 8
    min_user_reviews: int = 18
    max_user_reviews: int = 500
    n_train_targets: int = 8
    min_item_profile_reviewers: int = 5
    min_profile_reviews: int = 8

    def __post_init__(self) -> None:
        """Thresholds that cannot work are a :class:`ConfigError` when the config is read,
        before any review is: found after reading a large dump, they would waste the read."""
        for name in ("min_item_users", "min_user_reviews", "max_user_reviews", "min_item_profile_reviewers",
                     "min_profile_reviews"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"thresholds.{name}", value, "must be an integer >= 0")
        if self.min_text_chars < 1:
            raise ConfigError("thresholds.min_text_chars", self.min_text_chars,
                              "must be >= 1: empty texts cannot be targets")
        if self.n_train_targets < 1:
            raise ConfigError("thresholds.n_train_targets", self.n_train_targets, "must be >= 1")
        if self.min_user_reviews < self.n_train_targets + 3:
            raise ConfigError("thresholds.min_user_reviews", self.min_user_reviews,
                              f"must be >= n_train_targets + 3 = {self.n_train_targets + 3}: "
                              f"{self.n_train_targets + 2} targets and at least one profile review")
        if self.max_user_reviews < self.min_user_reviews:
            raise ConfigError("thresholds.max_user_reviews", self.max_user_reviews,
                              f"must be >= min_user_reviews ({self.min_user_reviews})")
        low, high = self.min_description_chars, self.max_description_chars
        if low is not None and low < 0:
            raise ConfigError("thresholds.min_description_chars", low, "must be >= 0 or null")
        if high is not None and high < (low or 0):
            raise ConfigError("thresholds.max_description_chars", high,
                              f"must be >= min_description_chars ({low or 0}) or null")


#: Relaxed thresholds for small corpora such as the 2014 5-core files, where DPL's leave
#: no users: one train target per user and peers from at least one other reviewer.
FIVE_CORE_THRESHOLDS = Thresholds(
    min_text_chars=1, min_description_chars=None, max_description_chars=None, min_item_users=2,
    min_user_reviews=6, max_user_reviews=500, n_train_targets=1, min_item_profile_reviewers=2,
    min_profile_reviews=3)


@dataclass
class PreprocessReport:
    """Counts of what each rule removed, in the order the rules ran."""

    removed: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)

    def drop(self, rule: str, n: int) -> None:
        self.removed[rule] = self.removed.get(rule, 0) + int(n)

    def format(self) -> str:
        lines = ["preprocessing:"]
        lines += [f"  kept    {n:>9}  {what}" for what, n in self.kept.items()]
        lines += [f"  removed {n:>9}  {rule}" for rule, n in self.removed.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def preprocess(reviews: list[Review], items: dict[str, Item] | None, thresholds: Thresholds,
               report: PreprocessReport | None = None) -> PreparedData:
    """Turn raw reviews of any number of categories into DPL-format rows."""
    report = report if report is not None else PreprocessReport()
    report.kept["input reviews"] = report.kept.get("input reviews", 0) + len(reviews)
    by_category: dict[str, list[Review]] = defaultdict(list)
    for review in reviews:
        by_category[review.category].append(review)
    data = PreparedData(items=dict(items or {}))
    for category in sorted(by_category):
        data.rows[category] = _preprocess_category(by_category[category], items, thresholds, report)
    report.kept["users"] = sum(len({r.user_id for r in splits.get("test", [])}) for splits in data.rows.values())
    for split in ("train", "val", "test"):
        report.kept[f"{split} rows"] = sum(len(s.get(split, [])) for s in data.rows.values())
    return data


def _preprocess_category(reviews: list[Review], items: dict[str, Item] | None, t: Thresholds,
                         report: PreprocessReport) -> dict[str, list[DPLRow]]:
    kept = [r for r in reviews if len(r.text.strip()) >= t.min_text_chars]
    report.drop(f"reviews: text shorter than {t.min_text_chars} chars", len(reviews) - len(kept))

    if items is not None and t.min_description_chars is not None:
        low, high = t.min_description_chars, t.max_description_chars or float("inf")
        ok = {i for i, item in items.items() if low <= len(item.description) <= high}
        before = len(kept)
        kept = [r for r in kept if r.item_id in ok]
        report.drop(f"reviews: item description outside [{low}, {high}] chars", before - len(kept))

    kept = _dedupe(kept, report)
    kept = _fixed_point(kept, t, report)
    return _split_rows(kept, t, report)


def _dedupe(reviews: list[Review], report: PreprocessReport) -> list[Review]:
    """Per user, one review per item and per text: the newest wins."""
    newest_first = sorted(reviews, key=time_order_key, reverse=True)
    seen_items, seen_texts, out = set(), set(), []
    dup_item = dup_text = 0
    for review in newest_first:
        item_key, text_key = (review.user_id, review.item_id), (review.user_id, review.text)
        if item_key in seen_items:
            dup_item += 1
        elif text_key in seen_texts:
            dup_text += 1
        else:
            seen_items.add(item_key)
            seen_texts.add(text_key)
            out.append(review)
    report.drop("reviews: same user and item, older one", dup_item)
    report.drop("reviews: same user and text, older one", dup_text)
    return out


def _fixed_point(reviews: list[Review], t: Thresholds, report: PreprocessReport) -> list[Review]:
    """Alternate the item and user count rules until neither removes anything."""
    if not reviews:
        return reviews
    _, users = np.unique([r.user_id for r in reviews], return_inverse=True)
    _, items = np.unique([r.item_id for r in reviews], return_inverse=True)
    keep = np.ones(len(reviews), dtype=bool)
    while True:
        # After deduplication each (user, item) pair is unique, so review counts per
        # item are distinct-reviewer counts.
        item_users = np.bincount(items[keep], minlength=items.max() + 1)
        item_ok = keep & (item_users[items] >= t.min_item_users)
        report.drop(f"reviews: item with < {t.min_item_users} reviewers (fixed point)", keep.sum() - item_ok.sum())
        user_reviews = np.bincount(users[item_ok], minlength=users.max() + 1)
        n = user_reviews[users]
        user_ok = item_ok & (n >= t.min_user_reviews) & (n <= t.max_user_reviews)
        report.drop(f"reviews: user outside [{t.min_user_reviews}, {t.max_user_reviews}] reviews (fixed point)",
                    item_ok.sum() - user_ok.sum())
        if user_ok.sum() == keep.sum():
            break
        keep = user_ok
    return [r for r, k in zip(reviews, keep) if k]


def _split_rows(reviews: list[Review], t: Thresholds, report: PreprocessReport) -> dict[str, list[DPLRow]]:
    by_user: dict[str, list[Review]] = defaultdict(list)
    for review in reviews:
        by_user[review.user_id].append(review)
    n_targets = t.n_train_targets + 2
    for user_reviews in by_user.values():
        user_reviews.sort(key=time_order_key)

    # Profile pool: everything but each user's val and test targets.
    pool_users: dict[str, set[str]] = defaultdict(set)
    for user, user_reviews in by_user.items():
        for review in user_reviews[:-2]:
            pool_users[review.item_id].add(user)
    profile_ok = {item for item, users in pool_users.items() if len(users) >= t.min_item_profile_reviewers}

    splits: dict[str, list[DPLRow]] = {"train": [], "val": [], "test": []}
    dropped_reviews = dropped_users = empty_rows = 0
    for user in sorted(by_user):
        ordered = by_user[user]
        usable = [r.item_id in profile_ok for r in ordered]
        n = len(ordered)
        if sum(usable[: n - 1]) < t.min_profile_reviews:
            dropped_users += 1
            continue
        dropped_reviews += (n - n_targets) - sum(usable[: n - n_targets])
        first_target = n - n_targets
        for position in range(first_target, n):
            profile = tuple(r for r, ok in zip(ordered[:position], usable[:position]) if ok)
            if not profile:
                empty_rows += 1
                continue
            offset = position - first_target
            split = "train" if offset < t.n_train_targets else ("val" if offset == t.n_train_targets else "test")
            splits[split].append(DPLRow(user, profile, ordered[position], ordered[position].category))
    report.drop(f"profile reviews: item with < {t.min_item_profile_reviewers} profile reviewers",
                dropped_reviews)
    report.drop(f"users: < {t.min_profile_reviews} usable profile reviews", dropped_users)
    report.drop("rows: restricted profile is empty", empty_rows)
    return splits
