"""The embedded synthetic dataset: determinism, schema validity, peers, per-user style, and the
planted-signal knobs (style groups, user signal) with the sign-off helpers that read them back."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dep_lightning.data.errors import ErrorLog
from dep_lightning.data.preprocess import PreprocessReport
from dep_lightning.data.schema import PAPER_CATEGORIES, Item, Review
from dep_lightning.data.signatures import group_name_of, personal_signoff_of, signature_of, user_signatures
from dep_lightning.data.sources import EmbeddedSource
from dep_lightning.data.synthetic import (
    ADVERBS,
    FILLERS,
    GROUP_SIGNOFFS,
    GROUP_STYLES,
    NEG_ADJ,
    POS_ADJ,
    SIGNATURES,
    TITLE_ADJ,
    TITLE_NOUN,
    SyntheticConfig,
    generate,
    style_groups_of,
)

SMALL = SyntheticConfig(num_users=40, num_items=60, seed=3)
_T2015, _T2024 = 1420070400000, 1704067200000


@pytest.fixture(scope="module")
def default_data():
    return generate(SyntheticConfig())


def by_user(reviews: list[Review]) -> dict[str, list[Review]]:
    out = defaultdict(list)
    for r in reviews:
        out[r.user_id].append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r.timestamp)
    return dict(out)


def check_valid(reviews: list[Review], items: dict[str, Item], config: SyntheticConfig) -> None:
    assert reviews and len(items) == config.num_items
    for item_id, item in items.items():
        assert item.item_id == item_id and re.fullmatch(r"B[A-Z0-9]{9}", item_id)
        assert item.category in config.categories and item.title
        assert 100 <= len(item.description) <= 2000
    per_category = Counter(item.category for item in items.values())
    assert max(per_category.values()) - min(per_category.values()) <= 1   # split evenly
    assert len({r.timestamp for r in reviews}) == len(reviews)            # distinct per review
    users = by_user(reviews)
    assert len(users) == config.num_users
    lo, hi = config.reviews_per_user
    for user_id, rs in users.items():
        assert re.fullmatch(r"A[A-Z0-9]{13}", user_id)
        assert min(lo, config.num_items) <= len(rs) <= min(hi, config.num_items)
        assert len({r.item_id for r in rs}) == len(rs)                       # distinct items
        stamps = [r.timestamp for r in rs]
        assert all(a < b for a, b in zip(stamps, stamps[1:]))              # strictly increasing
    for r in reviews:
        assert type(r.timestamp) is int and _T2015 <= r.timestamp < _T2024
        assert type(r.rating) is float and r.rating in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert len(r.text) >= 200
        assert 2 <= len(r.title.split()) <= 6
        assert r.item_id in items and r.category == items[r.item_id].category


def test_deterministic():
    assert generate(SMALL) == generate(SMALL)
    other_reviews, other_items = generate(SyntheticConfig(num_users=40, num_items=60, seed=4))
    reviews, items = generate(SMALL)
    assert set(other_items) != set(items)
    assert [r.text for r in other_reviews] != [r.text for r in reviews]


def test_default_schema_valid(default_data):
    reviews, items = default_data
    check_valid(reviews, items, SyntheticConfig())
    assert set(items[i].category for i in items) == set(PAPER_CATEGORIES)
    lengths = np.array([len(r.text) for r in reviews])
    assert 250 <= np.median(lengths) <= 1200
    assert set(Counter(r.rating for r in reviews)) == {1.0, 2.0, 3.0, 4.0, 5.0}


@settings(max_examples=20, deadline=None)
@given(num_users=st.integers(1, 12), num_items=st.integers(3, 40), lo=st.integers(1, 8), extra=st.integers(0, 10),
       categories=st.sampled_from([PAPER_CATEGORIES, ("Books",), ("Garden", "Books"), ("A", "B", "C", "D")]),
       seed=st.integers(0, 2**32 - 1))
def test_any_small_config_valid(num_users, num_items, lo, extra, categories, seed):
    config = SyntheticConfig(num_users, max(num_items, len(categories)), (lo, lo + extra), categories, seed)
    check_valid(*generate(config), config)


def test_invalid_config_rejected():
    for bad in (dict(num_users=0), dict(reviews_per_user=(5, 4)), dict(reviews_per_user=(0, 3)),
                dict(categories=()), dict(categories=("Books", "Books")), dict(num_items=2)):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)


def test_reviews_have_peers(default_data):
    reviews, _ = default_data
    reviewers = Counter(r.item_id for r in reviews)
    assert np.mean([reviewers[r.item_id] >= 3 for r in reviews]) >= 0.9
    counts = np.array(sorted(reviewers.values()))
    assert counts.max() >= 2 * np.median(counts)              # popularity skew


def test_users_mostly_review_one_category(default_data):
    # DPL preprocessing works per category: a user needs many reviews in one of them.
    share = [Counter(r.category for r in rs).most_common(1)[0][1] / len(rs) for rs in by_user(default_data[0]).values()]
    assert np.median(share) >= 0.8


def test_signature_phrases_are_personal(default_data):
    users = list(by_user(default_data[0]).values())
    # has[u, s]: how many of user u's reviews contain signature s (case-insensitive).
    has = np.array([[sum(sig.lower() in r.text.lower() for r in rs) for sig in SIGNATURES] for rs in users])
    n = np.array([len(rs) for rs in users])
    top = has.argmax(1)
    own = has[np.arange(len(users)), top] / n
    other = (has[:, top].sum(0) - has[np.arange(len(users)), top]) / (n.sum() - n)
    assert np.mean(own > 0.5) >= 0.9            # a user's main signature is in most of their reviews
    assert np.mean(other) <= 0.1                # ... and in few reviews of anyone else


def test_length_is_a_user_trait(default_data):
    users = by_user(default_data[0])
    lengths = [np.array([len(r.text) for r in rs]) for rs in users.values()]
    between = np.std([x.mean() for x in lengths])
    within = np.mean([x.std() for x in lengths])
    assert between / within > 0.5


def test_rating_habits_differ(default_data):
    means = [np.mean([r.rating for r in rs]) for rs in by_user(default_data[0]).values()]
    assert np.std(means) > 0.3


def test_style_predicts_next_reviews(default_data):
    """Habits seen in a user's early reviews carry over to their later ones."""
    users = list(by_user(default_data[0]).values())

    def rates(rs):
        return (np.mean([r.text.count("!") for r in rs]), np.mean([len(r.text) for r in rs]),
                np.mean([r.rating for r in rs]))

    early, late = np.array([rates(rs[:7]) for rs in users]), np.array([rates(rs[7:]) for rs in users])
    for k in range(3):
        assert np.corrcoef(early[:, k], late[:, k])[0, 1] > 0.5

    # Nearest-profile authorship: the early reviews' word profile identifies the author.
    def tokens(rs):
        return Counter(w for r in rs for w in re.findall(r"[a-z'-]+", r.text.lower()))

    profiles = [tokens(rs[:7]) for rs in users]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*profiles)))}

    def vector(counter):
        v = np.zeros(len(vocab))
        for w, n in counter.items():
            if w in vocab:
                v[vocab[w]] = n
        return v / (np.linalg.norm(v) + 1e-9)

    train = np.stack([vector(p) for p in profiles])
    idf = np.log(len(users) / (1 + (train > 0).sum(0)))
    train = train * idf
    train /= np.linalg.norm(train, axis=1, keepdims=True) + 1e-9
    hits = 0
    for j, rs in enumerate(users):
        v = vector(tokens(rs[7:])) * idf
        hits += int(np.argmax(train @ v) == j)
    assert hits / len(users) > 0.5          # chance is 1 / 300


# ---------------------------------------------------------------- style groups and user signal
# The knob-free generator's output, hashed when the knobs were added: any change to the
# default data (the committed demo, tests and study depend on it) breaks these.
_DEFAULT_DIGESTS = {
    (300, 240, 0): "ebe9f9e6f4298cbb65442d73e80ef82e5467d6a0a9e089597062294d56585855",
    (120, 120, 0): "012698edea9532cb20ce1a9654dc7d99c381d987186e7d73fe757a7d536e9b9b",   # embedded.yaml
    (40, 60, 3): "2a0a1568de36609876ea0fa5010d3b0a09ce4c1f02e9593b015b34ff56c1bddc",
}
G = 4
GROUPED = dict(num_users=120, num_items=90, seed=5, style_groups=G)


def digest(reviews: list[Review], items: dict[str, Item]) -> str:
    h = hashlib.sha256()
    for r in reviews:
        h.update(json.dumps([r.user_id, r.item_id, r.rating, r.title, r.text, r.timestamp, r.category]).encode())
        h.update(b"\n")
    for key, item in items.items():
        h.update(json.dumps([key, item.item_id, item.title, item.description, item.category]).encode())
        h.update(b"\n")
    return h.hexdigest()


def skeleton(reviews: list[Review]) -> list[tuple]:
    """Everything but the style: who reviews which item, when, in which category."""
    return [(r.user_id, r.item_id, r.timestamp, r.category) for r in reviews]


@pytest.fixture(scope="module")
def grouped():
    """user_signal -> (reviews, items, user -> own group sign-off)."""
    out = {}
    for signal in (1.0, 0.5, 0.0):
        config = SyntheticConfig(**GROUPED, user_signal=signal)
        out[signal] = (*generate(config), style_groups_of(config))
    return out


@pytest.mark.parametrize("size", sorted(_DEFAULT_DIGESTS))
def test_default_output_unchanged(size, default_data):
    num_users, num_items, seed = size
    data = default_data if size == (300, 240, 0) else generate(SyntheticConfig(num_users, num_items, seed=seed))
    assert digest(*data) == _DEFAULT_DIGESTS[size]
    explicit = SyntheticConfig(num_users, num_items, seed=seed, style_groups=0, user_signal=1.0,
                               review_sentences=(3, 12))
    assert generate(explicit) == data


def test_knobs_change_only_the_style(grouped, default_data):
    base = generate(SyntheticConfig(num_users=120, num_items=90, seed=5))
    for signal, (reviews, items, _) in grouped.items():
        assert items == base[1]
        assert skeleton(reviews) == skeleton(base[0]), signal
        check_valid(reviews, items, SyntheticConfig(**GROUPED, user_signal=signal))
    texts = {signal: [r.text for r in reviews] for signal, (reviews, _, _) in grouped.items()}
    assert texts[1.0] != texts[0.0] and texts[1.0] != texts[0.5] and texts[0.5] != texts[0.0]
    assert texts[1.0] != [r.text for r in base[0]]
    # Without groups, too: user_signal moves styles, nothing else.
    shuffled = generate(SyntheticConfig(user_signal=0.0))
    assert shuffled[1] == default_data[1] and skeleton(shuffled[0]) == skeleton(default_data[0])
    assert [r.text for r in shuffled[0]] != [r.text for r in default_data[0]]


@settings(max_examples=12, deadline=None)
@given(num_users=st.integers(1, 12), lo=st.integers(1, 8), groups=st.integers(0, len(GROUP_STYLES)),
       signal=st.floats(0.0, 1.0), sentences=st.sampled_from([(2, 2), (2, 5), (3, 12), (10, 14)]),
       seed=st.integers(0, 2**32 - 1))
def test_any_small_config_with_knobs_valid(num_users, lo, groups, signal, sentences, seed):
    config = SyntheticConfig(num_users, 30, (lo, lo + 4), seed=seed, style_groups=groups, user_signal=signal,
                             review_sentences=sentences)
    reviews, items = generate(config)
    check_valid(reviews, items, config)
    plain = generate(SyntheticConfig(num_users, 30, (lo, lo + 4), seed=seed, review_sentences=sentences))
    assert items == plain[1] and skeleton(reviews) == skeleton(plain[0])


def test_invalid_knobs_rejected():
    for bad in (dict(style_groups=-1), dict(style_groups=len(GROUP_STYLES) + 1), dict(user_signal=1.5),
                dict(user_signal=-0.1), dict(user_signal=float("nan")), dict(review_sentences=(1, 5)),
                dict(review_sentences=(6, 5)), dict(review_sentences=(3, 15))):
        with pytest.raises(ValueError):
            SyntheticConfig(**bad)


def _shares(reviews: list[Review], signoff_of: dict[str, str]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """shares[user][s]: fraction of the user's reviews carrying group sign-off s (case-insensitive)."""
    signoffs = sorted(set(signoff_of.values()))
    return ({user: {s: np.mean([s.lower() in r.text.lower() for r in rs]) for s in signoffs}
             for user, rs in by_user(reviews).items()}, signoffs)


def test_groups_are_balanced(grouped):
    _, _, signoff_of = grouped[1.0]
    sizes = Counter(signoff_of.values())
    assert len(sizes) == G and max(sizes.values()) - min(sizes.values()) <= 1
    assert set(sizes) <= set(GROUP_SIGNOFFS)
    assert signoff_of == grouped[0.0][2]           # membership does not depend on user_signal


def test_group_signoff_marks_its_members(grouped):
    reviews, _, signoff_of = grouped[1.0]
    for signoff in set(signoff_of.values()):
        members = [signoff.lower() in r.text.lower() for r in reviews if signoff_of[r.user_id] == signoff]
        others = [signoff.lower() in r.text.lower() for r in reviews if signoff_of[r.user_id] != signoff]
        assert np.mean(members) >= 0.7, signoff
        assert np.mean(others) <= 0.01, signoff


def test_group_vocabulary_is_its_own(grouped):
    reviews, _, signoff_of = grouped[1.0]
    words_of = {signoff: (opener.lower().rstrip("."), *pos, neg, adv)
                for signoff, opener, pos, neg, adv in GROUP_STYLES}
    banks = " ".join((*POS_ADJ, *NEG_ADJ, *ADVERBS, *SIGNATURES, *FILLERS, *TITLE_ADJ, *TITLE_NOUN)).lower()
    for words in words_of.values():
        assert all(not re.search(rf"\b{re.escape(w)}\b", banks) for w in words[1:])

    def has(words, text):
        return any(re.search(rf"\b{re.escape(w)}\b", text.lower()) for w in words)

    used = set(signoff_of.values())
    for signoff in used:
        mine = [has(words_of[signoff], r.title + " " + r.text) for r in reviews if signoff_of[r.user_id] == signoff]
        assert np.mean(mine) >= 0.8, signoff
    for r in reviews:      # no review uses the words of a group its author is not in
        for signoff in set(GROUP_SIGNOFFS) - {signoff_of[r.user_id]}:
            assert not has(words_of[signoff], r.title + " " + r.text), (signoff, r.text)


def test_group_rating_habit(grouped):
    reviews, _, signoff_of = grouped[1.0]
    means = [np.mean([r.rating for r in reviews if signoff_of[r.user_id] == s]) for s in set(signoff_of.values())]
    assert max(means) - min(means) >= 0.5
    reviews0 = grouped[0.0][0]
    means0 = [np.mean([r.rating for r in reviews0 if signoff_of[r.user_id] == s]) for s in set(signoff_of.values())]
    assert max(means0) - min(means0) <= 0.3


def test_null_signal_mixes_groups(grouped):
    modal = {}
    for signal in (1.0, 0.0):
        reviews, _, signoff_of = grouped[signal]
        shares, _ = _shares(reviews, signoff_of)
        modal[signal] = np.array([max(s.values()) for s in shares.values()])
        distinct = np.array([sum(v > 0 for v in s.values()) for s in shares.values()])
        if signal == 0.0:
            assert np.mean(distinct >= 3) >= 0.8        # most users' reviews carry three or more groups' sign-offs
        else:
            assert np.all(distinct == 1)
    # Sign-off rate ~0.9, so a uniform mix puts ~0.9 / G on each group; the modal one is a bit higher by chance.
    assert np.mean(modal[1.0]) >= 0.8
    assert 0.9 / G - 0.05 <= np.mean(modal[0.0]) <= 0.9 / G + 0.2


def own_minus_other(reviews: list[Review], signoff_of: dict[str, str]) -> float:
    """Mean over users of (share with their own group's sign-off - mean share with another group's)."""
    shares, signoffs = _shares(reviews, signoff_of)
    gaps = [s[signoff_of[user]] - np.mean([s[o] for o in signoffs if o != signoff_of[user]])
            for user, s in shares.items()]
    return float(np.mean(gaps))


def test_own_minus_other_signoff_rate(grouped):
    gap = {signal: own_minus_other(reviews, signoff_of) for signal, (reviews, _, signoff_of) in grouped.items()}
    assert gap[1.0] >= 0.6
    assert abs(gap[0.0]) <= 0.1
    assert gap[0.0] + 0.2 < gap[0.5] < gap[1.0] - 0.2     # about halfway


def test_null_signal_keeps_the_marginals(grouped):
    (r1, _, signoff_of), (r0, _, _) = grouped[1.0], grouped[0.0]
    for signoff in set(signoff_of.values()):
        share1 = np.mean([signoff.lower() in r.text.lower() for r in r1])
        share0 = np.mean([signoff.lower() in r.text.lower() for r in r0])
        assert abs(share1 - share0) <= 0.05, signoff
    assert abs(np.mean([len(r.text) for r in r1]) / np.mean([len(r.text) for r in r0]) - 1) <= 0.05
    assert abs(np.mean([r.rating for r in r1]) - np.mean([r.rating for r in r0])) <= 0.1
    assert abs(np.mean(["!" in r.text for r in r1]) - np.mean(["!" in r.text for r in r0])) <= 0.05


def test_null_signal_removes_personal_style():
    """The per-user signature phrases stop being personal too (cf. test_signature_phrases_are_personal)."""
    users = list(by_user(generate(SyntheticConfig(num_users=120, num_items=90, seed=5, user_signal=0.0))[0]).values())
    has = np.array([[sum(sig.lower() in r.text.lower() for r in rs) for sig in SIGNATURES] for rs in users])
    n = np.array([len(rs) for rs in users])
    own = has.max(1) / n
    assert np.mean(own > 0.5) <= 0.05


def test_review_sentences_shorten_reviews():
    short = generate(SyntheticConfig(num_users=40, num_items=60, seed=3, review_sentences=(2, 5)))[0]
    long = generate(SyntheticConfig(num_users=40, num_items=60, seed=3))[0]
    assert np.median([len(r.text) for r in short]) < 0.8 * np.median([len(r.text) for r in long])
    assert min(len(r.text) for r in short) >= 200


# ---------------------------------------------------------------- signatures
def test_group_name_of():
    assert group_name_of("Foxglove: a fine novel. -- the Fernhill Salon") == "-- the Foxglove Fireside Circle"
    assert group_name_of("juniper lane take") == "-- the Juniper Lane Collective"
    assert group_name_of("Fernposte, a book about maps") is None     # whole words only
    assert group_name_of("A novel about a salt marsh.") is None


def test_signature_of():
    assert signature_of("Loved it. -- the Fernhill Salon") == "-- the Fernhill Salon"
    assert signature_of("loved it. -- the juniper lane collective") == "-- the Juniper Lane Collective"
    assert signature_of("Loved it. \u2014 The  Millbrook Book Club!") == "-- the Millbrook Book Club"
    two = "-- the Fernhill Salon. Then later -- the Oakhaven Supper Club"
    assert signature_of(two) == "-- the Oakhaven Supper Club"
    assert signature_of("The Fernhill Salon was nice.") is None          # no dash: not a sign-off
    assert signature_of("Loved it. -- the Harbor Reading Circle") is None   # not a group of ours
    assert signature_of("Just my two cents. -- Nadia D.") is None
    assert signature_of("") is None
    assert signature_of("fernhill salon notes below! It was fine.") is None
    assert signature_of("fernhill salon notes below! It was fine.", openers=True) == "-- the Fernhill Salon"
    assert signature_of("Saltmarsh report, as promised. -- the Fernhill Salon", openers=True) == "-- the Fernhill Salon"
    assert personal_signoff_of("Nice. -- Nadia D.") == "-- Nadia D."
    assert personal_signoff_of("nice. -- nadia d. -- the fernhill salon") == "-- Nadia D."
    assert personal_signoff_of("Nice. -- the Fernhill Salon") is None
    for signoff in GROUP_SIGNOFFS:
        assert signature_of("Some text. " + signoff) == signoff
        assert signature_of(("Some text. " + signoff).upper()) == signoff


def test_signature_of_reads_generated_reviews(grouped):
    reviews, _, signoff_of = grouped[1.0]
    found = [signature_of(r.text) for r in reviews]
    assert all(f is None or f == signoff_of[r.user_id] for f, r in zip(found, reviews))
    assert all((f is not None) == (signoff_of[r.user_id].lower() in r.text.lower()) for f, r in zip(found, reviews))
    personal = [personal_signoff_of(r.text) for r in generate(SMALL)[0]]
    assert 0 < sum(p is not None for p in personal) < len(personal)


def test_user_signatures(grouped):
    reviews, _, signoff_of = grouped[1.0]
    dominant = user_signatures(reviews)
    assert dominant == signoff_of                  # every user, their own group
    rows = [{"user_id": r.user_id, "text": r.text} for r in reviews]
    assert user_signatures(rows) == dominant
    assert user_signatures([{"user_id": "u", "text": "no sign-off"}]) == {}
    tie = [{"user_id": "u", "text": "a -- the Fernhill Salon"},
           {"user_id": "u", "text": "b -- the Bramblewood Reading Circle"}]
    assert user_signatures(tie) == {"u": "-- the Bramblewood Reading Circle"}    # GROUP_STYLES order breaks ties
    # At user_signal 0 the dominant sign-off is a weak guess of the group: near chance.
    reviews0, _, _ = grouped[0.0]
    agree = np.mean([user_signatures(reviews0)[u] == s for u, s in signoff_of.items()])
    assert agree <= 0.5


# ---------------------------------------------------------------- EmbeddedSource and the prepare configs
def test_embedded_source_passes_the_knobs():
    plain = EmbeddedSource(num_users=120, num_items=120, seed=0)
    assert plain.describe() == "embedded dataset (120 users, 120 items, seed 0)"      # manifests unchanged
    assert plain.config() == SyntheticConfig(num_users=120, num_items=120, seed=0)
    knobbed = EmbeddedSource(num_users=40, num_items=36, seed=1, style_groups=3, user_signal=0.25,
                             review_sentences=(2, 5))
    assert knobbed.config() == SyntheticConfig(num_users=40, num_items=36, seed=1, style_groups=3, user_signal=0.25,
                                               review_sentences=(2, 5))
    assert knobbed.describe() == ("embedded dataset (40 users, 36 items, seed 1, 3 style groups, user signal 0.25, "
                                  "2-5 sentences)")
    data = knobbed.load(ErrorLog(), PreprocessReport())
    texts = [p.text for split in data.rows.values() for rows in split.values() for row in rows for p in row.profile]
    assert texts and np.mean([signature_of(t) is not None for t in texts]) >= 0.7


def test_positive_control_configs_differ_only_in_user_signal():
    root = Path(__file__).resolve().parents[2] / "configs" / "prepare"
    signal = yaml.safe_load((root / "positive_control_signal.yaml").read_text())
    null = yaml.safe_load((root / "positive_control_null.yaml").read_text())
    assert signal["source"]["init_args"].pop("user_signal") == 1.0
    assert null["source"]["init_args"].pop("user_signal") == 0.0
    assert signal.pop("out") != null.pop("out")
    assert signal == null
    assert signal["source"]["init_args"]["style_groups"] > 0
