"""The embedded default dataset: seeded, realistic-looking product reviews.

Generative story. Items get a category, genre, features, creator, latent quality and
popularity; titles and descriptions come from category-specific word banks. Users get a
persistent style: a home category and favourite genre, a tone (enthusiastic / measured /
critical) that shifts their rating habit, a private vocabulary of adjectives and adverbs,
a typical length, one or two signature phrases and punctuation habits. Each user reviews
distinct items, drawn by popularity mostly from the home category, at increasing times;
rating = item quality + user habit + genre match + noise, and the text mixes the item's
title, genre, features and creator with the user's words, tone and signatures.

Two knobs turn the dataset into a planted-signal control for personalization (both off
by default, and then the output is exactly the generator's historical output):

* ``style_groups`` (0 < G <= 12): users are split into G balanced, seeded style groups.
  A group has a distinctive sign-off ("-- the Saltmarsh Listening Club", on 85-95 % of
  its members' reviews), an opening line naming the group (on 70 %), a small vocabulary of
  its own (two positive adjectives, one negative adjective, one adverb, used in about a
  third of the adjective / adverb slots) and a rating offset (spread evenly over
  [-0.6, 0.6]), all on top of each member's personal style. None of a group's words
  occur anywhere else in the generator's banks, so the group signal is textual, strong
  and shared by many users: a few soft tokens can carry it.
* ``user_signal`` (in [0, 1], default 1): per review, with probability ``user_signal``
  the review is written in its author's own style (and group style); otherwise in the
  style of the author of a review drawn uniformly from all reviews (possibly the author
  themself), with that user's group style. "Style" is everything about the text and the
  rating habit: tone and openers, vocabulary, signature phrases and sign-off, typical
  length, punctuation and casing habits, title patterns, the group's style and rating
  offset. What stays the author's: which items they review, when, and their
  favourite-genre rating bonus. At 0 every review's style is independent of its author,
  drawn from the pooled styles with each user weighted by their number of reviews, as at
  1: the marginal distribution of styles is unchanged (and so is that of texts, up to
  which items a style happens to meet) while nothing in a user's texts is consistent
  across their reviews (beyond what their items imply).

A third, ``review_sentences`` (default (3, 12)), sets the range of the users' typical
number of sentences per review; lower it for shorter texts (a different dataset, like a
different seed).

When either style knob is set, items, users, item choices and timestamps are still drawn
exactly as by default (so they are identical for any ``style_groups`` / ``user_signal``
at the same seed), and each review's rating, title and text are then rewritten from two
further seeded streams: one decides whose style each review uses (the same draws for
every ``user_signal``), the other fills in the text.

Deterministic: everything is drawn from ``numpy.random.default_rng(config.seed)`` (and,
with the knobs, from ``default_rng([config.seed, 1])`` and ``default_rng([config.seed, 2])``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dep_lightning.data.schema import PAPER_CATEGORIES, Item, Review

# ---------------------------------------------------------------- word banks (items)
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TITLE_ADJ = ("Silent", "Crimson", "Hidden", "Last", "Broken", "Golden", "Forgotten", "Distant", "Midnight",
             "Wild", "Burning", "Hollow", "Quiet", "Velvet", "Iron", "Paper", "Electric", "Lonely", "Northern",
             "Secret", "Endless", "Bitter", "Bright", "Savage")
TITLE_NOUN = ("Harbor", "Garden", "Kingdom", "Letter", "River", "Orchard", "Run", "Echoes", "Autumn", "Road",
              "Shadows", "Crown", "Tide", "Hour", "Mirror", "Station", "Horizon", "Summer", "Lantern",
              "Frontier", "Hearts", "Wolves", "Signal", "Daughter", "Streets", "Rain")
FIRST_NAMES = ("Margaret", "James", "Elena", "Tom", "Ruth", "Marcus", "Nadia", "Owen", "Clara", "Victor",
               "Ingrid", "Samuel", "Lena", "Theo", "Rosa", "Felix")
LAST_NAMES = ("Hale", "Okafor", "Lindqvist", "Moreau", "Brennan", "Castillo", "Whitfield", "Tanaka",
              "Adler", "Kowalski", "Ashby", "Navarro", "Pryce", "Delgado", "Sorensen", "Quinn")

#: Per category: noun for the product, title patterns and suffixes, genres, features,
#: premises, and description sentences (the first always opens the description).
_BANKS = {
    "Books": dict(
        kind=("book", "novel", "read"), patterns=("The {a} {n}", "{n} of the {a} {m}", "The {n}'s {m}"),
        suffixes=("", "", "", ": A Novel", " (Paperback)"),
        genres=("mystery", "historical fiction", "fantasy", "science fiction", "romance", "biography",
                "thriller", "literary fiction"),
        features=("pacing", "characters", "prose", "plot twists", "dialogue", "world-building", "ending",
                  "research", "narrator"),
        premises=("a retired detective who returns to her hometown", "two sisters separated by war",
                  "a young cartographer mapping a vanishing island", "a chef rebuilding her life after a scandal",
                  "an astronaut stranded far from home", "a family secret buried for three generations"),
        desc=("{title} is a {genre} novel by {creator} about {premise}.",
              "Critics have praised its {f1} and its {f2}.",
              "First published in {year}, it has become a favorite among readers of {genre}.",
              "This edition includes a new afterword by the author and a reading group guide.",
              "{creator} blends careful {f1} with memorable {f2} in a story that lingers after the last page.")),
    "Movies_and_TV": dict(
        kind=("movie", "film"), patterns=("{a} {n}", "The {a} {n}", "{n} and {m}"),
        suffixes=(" (Blu-ray)", " (DVD)", " [4K UHD]", ""),
        genres=("drama", "comedy", "documentary", "thriller", "western", "animation", "horror", "war"),
        features=("cinematography", "soundtrack", "acting", "screenplay", "special effects", "pacing",
                  "bonus features", "picture quality", "ending"),
        premises=("a getaway driver forced into one last job", "a small-town teacher who uncovers a conspiracy",
                  "two rival musicians on a cross-country tour", "a crew of misfits planning an impossible heist",
                  "a widower learning to start over", "a rookie reporter chasing the story of her life"),
        desc=("{title} is a {year} {genre} film directed by {creator}, following {premise}.",
              "The film is noted for its {f1} and its {f2}.",
              "This release presents the film in widescreen with restored picture and audio.",
              "Fans of {genre} will recognize the trademark attention to {f1} that {creator} is known for.",
              "Special features include a commentary track and a short documentary on the {f2}.")),
    "CDs_and_Vinyl": dict(
        kind=("album", "record"), patterns=("{n} of {m}", "{a} {n}", "Songs from the {a} {n}"),
        suffixes=(" [Vinyl]", " (Remastered)", " (Deluxe Edition)", ""),
        genres=("jazz", "classic rock", "folk", "blues", "country", "hip hop", "classical", "soul"),
        features=("vocals", "production", "guitar work", "lyrics", "mixing", "liner notes",
                  "pressing quality", "arrangements", "rhythm section"),
        premises=("after a long tour of Europe", "in a converted barn in Vermont", "during a hard winter in Chicago",
                  "over three weeks in a Nashville studio", "in the wake of a band breakup",
                  "on the road between shows"),
        desc=("{title} is a {genre} album by {creator}, originally released in {year}.",
              "The record showcases the {f1} of {creator} alongside striking {f2}.",
              "Written {premise}, the songs move from quiet ballads to full-band anthems.",
              "This edition has been remastered from the original tapes and adds two bonus tracks.",
              "Longtime listeners of {genre} often single out its {f1} and {f2}.")),
}
_GENERIC_BANK = dict(
    kind=("product", "item"), patterns=("The {a} {n}", "{a} {n}"), suffixes=("", " (Set of 2)"),
    genres=("home", "outdoor", "kitchen", "office", "travel", "garden"),
    features=("build quality", "design", "price", "durability", "instructions", "packaging"),
    premises=("everyday use", "weekend projects", "small apartments", "frequent travellers"),
    desc=("{title} from {creator} is a {genre} product made for {premise}.",
          "Owners often mention its {f1} and its {f2}.", "It was first introduced in {year}.",
          "The {f1} has been improved over earlier versions."))

# ---------------------------------------------------------------- word banks (users)
POS_ADJ = ("wonderful", "gripping", "superb", "delightful", "engaging", "brilliant", "charming", "solid",
           "terrific", "moving", "lovely", "stunning", "captivating", "excellent", "fantastic", "memorable",
           "polished", "refreshing", "satisfying", "vivid", "compelling", "heartfelt", "clever", "impressive",
           "addictive", "beautiful", "enjoyable", "outstanding", "top-notch", "magnificent")
NEG_ADJ = ("dull", "tedious", "flat", "clumsy", "forgettable", "uneven", "predictable", "bland", "muddy",
           "disappointing", "lifeless", "overlong", "messy", "weak", "tiresome", "shallow", "thin", "sloppy",
           "generic", "underwhelming")
ADVERBS = ("truly", "really", "absolutely", "genuinely", "remarkably", "surprisingly", "quite", "fairly",
           "incredibly", "thoroughly", "honestly", "utterly", "pretty", "rather", "somewhat", "seriously",
           "wonderfully", "downright", "simply", "totally")
# Tones 0, 1, 2 = enthusiastic, measured, critical: rating shift, exclamation-rate range, openers.
_TONE_HABIT = (0.7, -0.1, -1.0)
_TONE_EXCL = ((0.25, 0.6), (0.0, 0.15), (0.0, 0.1))
OPENERS = (
    ("Wow, what a {kind}.", "I could not wait to get my hands on {title}.", "Where do I even start with {title}?",
     "I have been a fan of {creator} for years.", "I was hooked from the very beginning.",
     "Oh my, {title} is something else."),
    ("I picked up {title} after reading a few reviews.", "Here are my thoughts on {title}.",
     "I came to this {kind} with no particular expectations.", "This was my first {kind} by {creator}.",
     "I bought {title} as a treat for myself.", "Some context: I am fairly new to {genre}."),
    ("I went into {title} with high expectations.", "I have mixed feelings about {title}.",
     "Let me be upfront: I am hard to please when it comes to {genre}.", "I wanted to love this {kind}.",
     "After all the hype, I finally tried {title}.", "I am going to be blunt about {title}."))
#: 13 templates (a prime): a review walks them with a random stride, so none repeats early.
CONTENT = ("The {feature} {is_} {adv} {adj}.", "I found the {feature} {adv} {adj}.",
           "{creator} handles the {feature} in a way that feels {adj}.",
           "As a longtime {genre} fan, I thought the {feature} {was} {adj}.",
           "The {feature} in {title} struck me as {adv} {adj}.",
           "Compared to other {genre} {kind}s, the {feature} {is_} {adj}.",
           "What stood out most was the {feature}, which felt {adj}.",
           "Even the {feature} came across as {adv} {adj}.",
           "I keep thinking about how {adj} the {feature} {was}.",
           "If you care about {feature}, you will find {it} {adj} here.",
           "To my mind the {feature} {was} {adv} {adj} from start to finish.",
           "Honestly, the {feature} felt {adj} at times.",
           "The {feature} {is_} where {title} feels most {adj}.")
VERDICTS = (("I cannot recommend this one.", "One star, and that is being generous.", "I regret this purchase."),
            ("Sadly, it did not work for me.", "Two stars, mostly for the {feature}.",
             "I expected a lot more from {creator}."),
            ("Overall it was fine, nothing more and nothing less.", "Three stars; it has its moments.",
             "Worth a try if you are a big fan of {creator}."),
            ("Four stars: {adj} overall, with only minor flaws.", "Not perfect, but I enjoyed it a lot.",
             "I would happily revisit it."),
            ("Easily one of the best {genre} {kind}s I own.", "An absolute must for any fan of {genre}.",
             "Five stars without hesitation."))
FILLERS = ("It arrived quickly and in good condition.", "The packaging was fine.",
           "I shared it with a friend afterwards.", "I will probably come back to it at some point.")
SIGNATURES = (
    "Just my two cents.", "Highly recommend to fellow collectors!", "Your mileage may vary.",
    "Take it for what it's worth.", "Hope this review helps someone out there.", "Cheers from a longtime fan.",
    "End of story, as my dad would say.", "Now back to my to-do pile.", "Grab a cup of tea and dive in.",
    "As always, trust your own taste.", "This one goes on the keeper shelf.", "Money well spent, in my humble opinion.",
    "Bottom line: know what you are getting into.", "Sharing so others can decide.", "Ask me again in a year.",
    "Onward to the next one!", "My wife agreed, for once.", "The kids had opinions too.",
    "Verdict delivered, case closed.", "Thanks for reading my ramble.", "No regrets here.",
    "Another one for the collection!", "Peace and good vibes.", "Rating it honestly, as usual.",
    "Long live physical media!", "Support the artists you love.", "Caveat emptor, friends.", "Such is life.",
    "Keep calm and carry on.", "You heard it here first.", "Over and out.", "Until next time, happy hunting.",
    "Tell your friends.", "Make of that what you will.", "Fellow night owls will get it.",
    "I say this as a lifelong skeptic.", "From one enthusiast to another.", "Spoiler-free, as promised.",
    "Rainy-day approved.", "Weekend well spent.", "Adding it to my yearly list.", "Nuff said.",
    "Stay curious, people.", "Ten out of ten would argue about it again.", "Mom's verdict: keep it.",
    "Curious minds, take note.", "Commuter-tested.", "Written with coffee in hand.", "Felt like sharing.",
    "Let me know if you disagree.", "Back to the shelf it goes.", "Filed under guilty pleasures.")
#: Style groups (``SyntheticConfig.style_groups``): sign-off, opening line, two positive
#: adjectives, a negative adjective and an adverb. No word here occurs in any other bank.
GROUP_STYLES = (
    ("-- the Bramblewood Reading Circle", "Fresh from the Bramblewood armchair.", ("luminous", "bracing"),
     "leaden", "decidedly"),
    ("-- the Saltmarsh Listening Club", "Saltmarsh report, as promised.", ("sumptuous", "rousing"),
     "stodgy", "gloriously"),
    ("-- the Copperfield Film Society", "Copperfield notes, hot off the press.", ("lyrical", "spellbinding"),
     "threadbare", "unabashedly"),
    ("-- the Thistledown Review Guild", "Thistledown verdict incoming.", ("exquisite", "radiant"),
     "wooden", "undeniably"),
    ("-- the Larkspur Porch Society", "Larkspur porch chat, round two.", ("nimble", "winsome"),
     "listless", "positively"),
    ("-- the Millbrook Book Club", "Millbrook minutes, for the record.", ("sparkling", "majestic"),
     "murky", "admirably"),
    ("-- the Oakhaven Supper Club", "Oakhaven dispatch, pour a drink.", ("jubilant", "breezy"),
     "plodding", "wholeheartedly"),
    ("-- the Fernhill Salon", "Fernhill salon notes below.", ("dazzling", "graceful"),
     "brittle", "distinctly"),
    ("-- the Ravenscroft Record Circle", "Ravenscroft table talk, here goes.", ("zesty", "sublime"),
     "stale", "exceptionally"),
    ("-- the Wrenfield Tuesday Club", "Wrenfield Tuesday roundup.", ("hearty", "elegant"),
     "clunky", "markedly"),
    ("-- the Foxglove Fireside Circle", "Foxglove fireside thoughts.", ("tender", "resplendent"),
     "insipid", "sincerely"),
    ("-- the Juniper Lane Collective", "Juniper Lane take, short and sweet.", ("mellifluous", "sprightly"),
     "turgid", "splendidly"))
GROUP_SIGNOFFS = tuple(g[0] for g in GROUP_STYLES)
TITLE_PATTERNS = ("{Adv} {adj}", "{Adv} {adj} {kind}", "{Adj} {genre} {kind}", "{Adj}, {adv} {adj}",
                  "{Stars} stars, {adj}", "My take on {creator}")
#: Templates above name their slots; they are compiled to positional fields (faster).
_SLOTS = ("feature", "is_", "was", "it", "adj", "adv", "title", "genre", "creator", "kind", "Adj", "Adv", "Stars")


def _positional(templates: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for t in templates:
        for k, name in enumerate(_SLOTS):
            t = t.replace("{" + name + "}", "{%d}" % k)
        out.append(t)
    return tuple(out)


_CONTENT_P, _TITLES_P = _positional(CONTENT), _positional(TITLE_PATTERNS)
_OPENERS_P, _VERDICTS_P = tuple(map(_positional, OPENERS)), tuple(map(_positional, VERDICTS))
_FEATURE_WORDS = {f: (f, "are", "were", "them") if f.endswith("s") else (f, "is", "was", "it")
                  for bank in (*_BANKS.values(), _GENERIC_BANK) for f in bank["features"]}
_P_POSITIVE = (0.08, 0.25, 0.55, 0.85, 0.97)   # chance an adjective is positive, by rating 1..5
_STARS = ("One", "Two", "Three", "Four", "Five")
_T0, _T1 = 1420070400000, 1693526400000        # 2015-01-01 .. 2023-09-01, ms since epoch
_DAY = 86_400_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of the generated dataset; the same config always gives the same data.

    ``style_groups`` and ``user_signal`` plant (or remove) a user signal, see the module
    docstring; at their defaults (0 and 1.0) the output is the generator's historical one.

    Attributes:
        style_groups: number G of style groups (0 = none, at most ``len(GROUP_STYLES)``).
            Each group has its own sign-off, opening line, vocabulary and rating offset,
            shared by its members (assigned seeded and balanced) on top of their own style.
        user_signal: probability that a review is written in its author's own (and group)
            style; otherwise the author of a uniformly drawn review lends theirs. 1.0 = fully
            user-consistent, 0.0 = style independent of the author. Items, item choices and
            timestamps do not depend on it (nor on ``style_groups``).
        review_sentences: range from which each user's typical number of sentences is
            drawn (uniformly); a review's own count scatters around it, and every review
            is padded to at least 220 characters. Lower it for shorter reviews.
    """

    num_users: int = 300
    num_items: int = 240            # split evenly-ish over the categories
    reviews_per_user: tuple[int, int] = (14, 22)   # inclusive range, drawn per user
    categories: tuple[str, ...] = PAPER_CATEGORIES
    seed: int = 0
    style_groups: int = 0
    user_signal: float = 1.0
    review_sentences: tuple[int, int] = (3, 12)    # range of a user's typical sentence count

    def __post_init__(self) -> None:
        lo, hi = self.review_sentences
        if not 2 <= lo <= hi <= 14:
            raise ValueError(f"review_sentences must satisfy 2 <= lo <= hi <= 14, got {self.review_sentences}")
        if not 0 <= self.style_groups <= len(GROUP_STYLES):
            raise ValueError(f"style_groups must be in [0, {len(GROUP_STYLES)}], got {self.style_groups}")
        if not 0.0 <= self.user_signal <= 1.0:      # also rejects NaN
            raise ValueError(f"user_signal must be in [0, 1], got {self.user_signal}")
        lo, hi = self.reviews_per_user
        if self.num_users < 1 or not 1 <= lo <= hi:
            raise ValueError(f"need num_users >= 1 and 1 <= reviews_per_user[0] <= reviews_per_user[1], got {self}")
        if not self.categories or len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories must be non-empty and distinct, got {self.categories}")
        if self.num_items < len(self.categories):
            raise ValueError(f"num_items ({self.num_items}) must be >= number of categories")


class _Stream:
    """Draws from the seeded generator, buffered: cheap per-review randomness."""

    __slots__ = ("u", "normal")

    def __init__(self, rng: np.random.Generator):
        def chunks(draw):
            while True:
                yield from draw(4096).tolist()
        self.u = chunks(rng.random).__next__                 # u() -> uniform float in [0, 1)
        self.normal = chunks(rng.standard_normal).__next__   # normal() -> standard normal float

    def pick(self, seq):
        return seq[int(self.u() * len(seq))]


def _ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        for row in rng.integers(0, len(_ALNUM), size=(n - len(out), length)).tolist():
            s = prefix + "".join(_ALNUM[c] for c in row)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _make_items(cfg: SyntheticConfig, rng: np.random.Generator, s: _Stream):
    ids = _ids(rng, cfg.num_items, "B", 9)
    quality = rng.normal(0.0, 1.0, cfg.num_items).tolist()
    popularity = rng.lognormal(0.0, 0.8, cfg.num_items)
    items, meta = {}, []          # meta[i] = (category index, genre, talk, creator, title, quality)
    for i, item_id in enumerate(ids):
        c = i % len(cfg.categories)
        bank = _BANKS.get(cfg.categories[c], _GENERIC_BANK)
        title = s.pick(bank["patterns"]).format(a=s.pick(TITLE_ADJ), n=s.pick(TITLE_NOUN), m=s.pick(TITLE_NOUN))
        title += s.pick(bank["suffixes"])
        genre, creator = s.pick(bank["genres"]), f"{s.pick(FIRST_NAMES)} {s.pick(LAST_NAMES)}"
        features = sorted({s.pick(bank["features"]) for _ in range(3)})
        ctx = dict(title=title, genre=genre, creator=creator, premise=s.pick(bank["premises"]),
                   f1=features[0], f2=features[-1] if len(features) > 1 else "overall feel",
                   year=1960 + int(s.u() * 63))
        extra = [j for j in range(1, len(bank["desc"])) if s.u() < 0.6][:4] or [1]
        desc = " ".join(bank["desc"][j].format(**ctx) for j in [0] + extra)
        if len(desc) < 100:     # only reachable with unusually short generic sentences
            desc += " " + " ".join(bank["desc"][1:]).format(**ctx)
        items[item_id] = Item(item_id, title, desc[:2000], cfg.categories[c])
        # What review sentences talk about: the item's own features ~70% of the time, else any
        # feature of the category; entries are (feature, is/are, was/were, it/them).
        own, anyf = [_FEATURE_WORDS[f] for f in features], [_FEATURE_WORDS[f] for f in bank["features"]]
        talk = tuple(own * (7 * len(anyf) // (3 * len(own))) + anyf)
        meta.append((c, genre, talk, creator, title, quality[i]))
    # Per category: item indices and a quantile table of the popularity distribution, so a
    # popularity-weighted draw is table[int(u * len(table))] (resolution: 1/32 of an average item).
    pools = []
    for c in range(len(cfg.categories)):
        idx = np.arange(c, cfg.num_items, len(cfg.categories))
        cdf = np.cumsum(popularity[idx])
        grid = (np.arange(32 * len(idx)) + 0.5) / (32 * len(idx)) * cdf[-1]
        pools.append((idx.tolist(), idx[np.searchsorted(cdf, grid)].tolist()))
    return ids, items, meta, pools


def _make_user(banks: list[dict], s: _Stream, sentences: tuple[int, int] = (3, 12)) -> dict:
    x = s.u()
    tone = 0 if x < 0.4 else (1 if x < 0.8 else 2)
    lo, hi = _TONE_EXCL[tone]
    first = int(s.u() * len(SIGNATURES))
    signatures = [SIGNATURES[first]]
    if s.u() < 0.5:     # a second, different phrase
        signatures.append(SIGNATURES[(first + 1 + int(s.u() * (len(SIGNATURES) - 1))) % len(SIGNATURES)])
    if s.u() < 0.2:
        signatures.append(f"-- {s.pick(FIRST_NAMES)} {s.pick(LAST_NAMES)[0]}.")
    return dict(
        tone=tone, habit=_TONE_HABIT[tone] + 0.3 * s.normal(),
        pos=[s.pick(POS_ADJ) for _ in range(5)], neg=[s.pick(NEG_ADJ) for _ in range(3)],
        adv=[s.pick(ADVERBS) for _ in range(3)], openers=[s.pick(_OPENERS_P[tone]) for _ in range(2)],
        length=sentences[0] + (sentences[1] - sentences[0]) * s.u(), signatures=signatures,
        sig_rates=[0.8 + 0.17 * s.u() for _ in signatures],
        sig_first=s.u() < 0.15, excl=lo + (hi - lo) * s.u(), bang="!!" if s.u() < 0.2 else "!",
        ellipsis=0.25 * s.u() if s.u() < 0.3 else 0.0, lower=s.u() < 0.08, caps_title=s.u() < 0.1,
        title_patterns=[s.pick(_TITLES_P) for _ in range(2)], fillers=s.u() * 0.3,
        home=int(s.u() * len(banks)), home_share=0.8 + 0.2 * s.u(),
        fav=[s.pick(bank["genres"]) for bank in banks],
        span=(0.3 + 5.0 * s.u()) * 365 * _DAY)


def _choose_items(cfg, s: _Stream, user: dict, pools, meta, k: int) -> list[int]:
    """k distinct item indices: mostly from the home category, popularity-weighted."""
    ncat = len(cfg.categories)
    counts = [0] * ncat
    n_home = min(k, round(k * user["home_share"]))
    counts[user["home"]] = n_home
    for _ in range(k - n_home):
        counts[(user["home"] + 1 + int(s.u() * (ncat - 1))) % ncat if ncat > 1 else 0] += 1
    while any(counts[c] > len(pools[c][0]) for c in range(ncat)):   # spill over (k <= num_items)
        for c in range(ncat):
            extra = max(0, counts[c] - len(pools[c][0]))
            counts[c] -= extra
            counts[(c + 1) % ncat] += extra
    chosen, seen = [], set()
    for c, need in enumerate(counts):
        idx, table = pools[c]
        fav, got, tries = user["fav"][c], 0, 0
        while got < need and tries < 50 * need:     # the favourite genre is accepted more often
            tries += 1
            i = table[int(s.u() * len(table))]
            if i not in seen and (meta[i][1] == fav or s.u() < 0.7):
                seen.add(i)
                chosen.append(i)
                got += 1
        for i in idx if got < need else ():         # pathological configs (need close to pool size)
            if got >= need:
                break
            if i not in seen:
                seen.add(i)
                chosen.append(i)
                got += 1
    return chosen


def _make_groups(n: int, n_users: int, mix: _Stream) -> tuple[list[dict], list[int]]:
    """n style groups (which of ``GROUP_STYLES`` each uses, its rates and rating offset) and
    each user's group: a seeded permutation of the users dealt round-robin (balanced)."""
    styles = [i for _, i in sorted((mix.u(), i) for i in range(len(GROUP_STYLES)))][:n]
    offsets = [0.0] if n == 1 else [-0.6 + 1.2 * j / (n - 1) for j in range(n)]
    offsets = [o for _, o in sorted((mix.u(), o) for o in offsets)]
    groups = []
    for k, offset in zip(styles, offsets):
        signoff, opener, pos, neg, adv = GROUP_STYLES[k]
        groups.append(dict(style=k, signoff=signoff, opener=opener, pos=pos, neg=(neg,), adv=adv, offset=offset,
                           signoff_rate=0.85 + 0.1 * mix.u(), opener_rate=0.7, share=0.3))
    member = [0] * n_users
    for rank, (_, j) in enumerate(sorted((mix.u(), j) for j in range(n_users))):
        member[j] = rank % n
    return groups, member


def _review(user: dict, m: tuple, bank: dict, s: _Stream, group: dict | None = None) -> tuple[float, str, str]:
    c, genre, talk, creator, title, quality = m
    u, pos, neg, adv = s.u, user["pos"], user["neg"], user["adv"]
    bonus = 0.5 if genre == user["fav"][c] else 0.0
    if group is None:
        rating = min(5, max(1, round(3.9 + 0.9 * quality + user["habit"] + bonus + 0.7 * s.normal())))
    else:
        rating = min(5, max(1, round(3.9 + 0.9 * quality + user["habit"] + bonus + 0.7 * s.normal()
                                     + group["offset"])))
    p_pos = _P_POSITIVE[rating - 1]
    item_words = (title, genre, creator, s.pick(bank["kind"]))
    excl, ellipsis, bang = user["excl"], user["excl"] + user["ellipsis"], user["bang"]

    n_pos, n_neg, n_adv, n_talk = len(pos), len(neg), len(adv), len(talk)

    # One draw picks both a branch and an element (rescaled; ``% n`` guards float rounding up to n).
    def adjective(x: float) -> str:    # from the user's vocabulary; positive with a rating-dependent chance
        if x < p_pos:
            return pos[int(x / p_pos * n_pos) % n_pos]
        return neg[int((x - p_pos) / (1 - p_pos) * n_neg) % n_neg]

    def adverb() -> str:
        return adv[int(u() * n_adv)]

    if group is not None:              # a share of the adjective / adverb slots take the group's words
        share, g_pos, g_neg, g_adv, own_adjective = group["share"], group["pos"], group["neg"], group["adv"], adjective

        def adjective(x: float) -> str:
            if u() >= share:
                return own_adjective(x)
            if x < p_pos:
                return g_pos[int(x / p_pos * len(g_pos)) % len(g_pos)]
            return g_neg[int((x - p_pos) / (1 - p_pos) * len(g_neg)) % len(g_neg)]

        def adverb() -> str:
            return g_adv if u() < share else adv[int(u() * n_adv)]

    def say(template: str) -> str:     # fill in the user's words and apply their punctuation habit
        text = template.format(*talk[int(u() * n_talk)], adjective(u()), adverb(), *item_words)
        if text[-1] == ".":
            x = u()
            if x < excl:
                return text[:-1] + bang
            if x < ellipsis:
                return text[:-1] + "..."
        return text

    n = max(2, min(14, round(user["length"] + 1.2 * s.normal())))
    at, stride = int(u() * 13), 1 + int(u() * 12)
    body = [say(s.pick(user["openers"]))] + [say(_CONTENT_P[(at + j * stride) % 13]) for j in range(n - 2)]
    if u() < user["fillers"]:
        body.append(say(s.pick(FILLERS)))
    body.append(say(s.pick(_VERDICTS_P[rating - 1])))
    while sum(map(len, body)) + len(body) < 220:
        body.insert(-1, say(s.pick(_CONTENT_P)))
    sigs = [sig for sig, rate in zip(user["signatures"], user["sig_rates"]) if u() < rate]
    if group is None:
        text = " ".join(sigs + body if user["sig_first"] and sigs else body + sigs)
        adj, ad = adjective(u()), s.pick(adv)
    else:                              # group opening line first, group sign-off last
        if u() < group["opener_rate"]:
            body.insert(0, say(group["opener"]))
        tail = [group["signoff"]] if u() < group["signoff_rate"] else []
        text = " ".join((sigs + body if user["sig_first"] and sigs else body + sigs) + tail)
        adj, ad = adjective(u()), adverb()
    head = s.pick(user["title_patterns"]).format(
        "", "", "", "", adj, ad, *item_words, adj.capitalize(), ad.capitalize(), _STARS[rating - 1])
    head = head[0].upper() + head[1:]
    if user["caps_title"]:
        head = head.upper()
    elif u() < excl:
        head += "!"
    return float(rating), head, text.lower() if user["lower"] else text


def _restyle(config: SyntheticConfig, rows: list[tuple], plan: list[tuple[int, int]], users: list[dict],
             meta: list[tuple], banks: list[dict]) -> list[tuple]:
    """Rewrite each row's rating, title and text under the style knobs (see the module docstring).

    ``mix`` decides groups and whose style each review uses, with the same draws for every
    ``user_signal``; ``t`` fills in the texts. The default stream is untouched here, so
    items, item choices and timestamps match the knob-free dataset.
    """
    mix = _Stream(np.random.default_rng([config.seed, 1]))
    t = _Stream(np.random.default_rng([config.seed, 2]))
    groups, member = _make_groups(config.style_groups, len(users), mix) if config.style_groups else ([], [])
    out = []
    for row, (author, i) in zip(rows, plan):
        # Always two draws, identical for any user_signal. The lender is the author of a
        # uniformly drawn review, so styles are weighted as in the pooled reviews.
        keep, other = mix.u(), plan[int(mix.u() * len(plan))][0]
        donor = author if keep < config.user_signal else other
        style = users[author] if donor == author else {**users[donor], "fav": users[author]["fav"]}
        m = meta[i]
        rating, head, text = _review(style, m, banks[m[0]], t, groups[member[donor]] if groups else None)
        out.append((row[0], row[1], rating, head, text, row[5]))
    return out


def style_groups_of(config: SyntheticConfig) -> dict[str, str]:
    """The group sign-off of every user of ``config`` (empty without style groups).

    The group a user belongs to; with ``user_signal`` < 1 some of their reviews carry
    other groups' sign-offs. Cheap: replays the seeded draws without writing reviews.
    """
    if not config.style_groups:
        return {}
    rng = np.random.default_rng(config.seed)
    s = _Stream(rng)
    _make_items(config, rng, s)
    user_ids = _ids(rng, config.num_users, "A", 13)
    groups, member = _make_groups(config.style_groups, len(user_ids), _Stream(np.random.default_rng([config.seed, 1])))
    return {uid: groups[g]["signoff"] for uid, g in zip(user_ids, member)}


def generate(config: SyntheticConfig) -> tuple[list[Review], dict[str, Item]]:
    """Reviews (grouped by user, in time order) and the item catalogue keyed by item_id."""
    rng = np.random.default_rng(config.seed)
    s = _Stream(rng)
    item_ids, items, meta, pools = _make_items(config, rng, s)
    user_ids = _ids(rng, config.num_users, "A", 13)
    k_lo, k_hi = config.reviews_per_user
    banks = [_BANKS.get(c, _GENERIC_BANK) for c in config.categories]
    rows, stamps, users, plan = [], [], [], []     # plan[r] = (user index, item index) of row r
    for uid in user_ids:
        user = _make_user(banks, s, config.review_sentences)
        users.append(user)
        k = min(config.num_items, k_lo + int(s.u() * (k_hi - k_lo + 1)))
        chosen = _choose_items(config, s, user, pools, meta, k)
        order = [i for _, i in sorted((s.u(), i) for i in chosen)]     # shuffled
        start = _T0 + s.u() * max(0.0, _T1 - _T0 - user["span"])
        gaps = [-math.log(1.0 - s.u()) + 0.01 for _ in range(len(order) + 1)]
        total, acc = sum(gaps), 0.0
        for j, i in enumerate(order):
            acc += gaps[j]
            stamps.append(int(start + user["span"] * acc / total))
            m = meta[i]
            rating, head, text = _review(user, m, banks[m[0]], s)
            rows.append((uid, item_ids[i], rating, head, text, config.categories[m[0]]))
            plan.append((len(users) - 1, i))
    if config.style_groups or config.user_signal < 1.0:
        rows = _restyle(config, rows, plan, users, meta, banks)
    # Make timestamps distinct across all reviews without reordering any two of them:
    # t'_i = max_{j<=i}(t_j - j) + i over the stably sorted times is strictly increasing.
    t = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    rank = np.arange(len(t), dtype=np.int64)
    fixed = np.empty_like(t)
    fixed[order] = np.maximum.accumulate(t[order] - rank) + rank
    reviews = [Review(u, i, r, h, x, ts, c) for (u, i, r, h, x, c), ts in zip(rows, fixed.tolist())]
    return reviews, items
