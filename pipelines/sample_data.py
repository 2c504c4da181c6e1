"""Deterministic sample data for the demo and the tests.

Four inputs, written under data/sample/:
- general.jsonl      encyclopedia-style English documents, with planted exact and near duplicates,
                     web boilerplate, non-English text, junk and PII for the cleaning stage to find;
- domain.jsonl       product reviews (the domain for continued pretraining), with the same kinds of noise;
- instructions.jsonl Alpaca records of a checkable task: "is this review positive or negative?", the label
                     decided by the review's content (its explicit or implicit verdict, else the majority of its
                     aspects, which often go both ways), 5 % wrong;
- preferences.jsonl  prompt/chosen/rejected pairs over the same reviews, ordered by a known gold rule (correct,
                     justified by a reason the review gives, one short sentence; tasks/sentiment.py), 5 % swapped,
                     each with its `kind` and the true label as `reference`.

Every review text is unique across the three review sets, so a held-out example can never be in training.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SAMPLE_DIR = Path("data/sample")

# --------------------------------------------------------------------------- vocabulary
SYL = ["ka", "lo", "mi", "ren", "tor", "va", "bel", "dun", "sa", "qui", "mar", "ostr", "fen", "gal", "ith",
       "bra", "cor", "del", "wyn", "hal", "per", "ros", "tam", "ul", "zen", "ny", "os", "ard", "ley", "ton"]
REGIONS = ["northern", "southern", "eastern", "western", "central", "coastal", "highland", "lowland"]
FEATURES = ["old stone bridges", "busy weekly market", "narrow streets", "large public library", "annual music festival",
            "quiet harbour", "tall clock tower", "green parks", "ancient castle", "famous bakery", "wide river beaches",
            "painted houses", "railway station", "botanical garden", "maritime museum"]
INDUSTRIES = ["farming", "fishing", "tourism", "textile work", "shipbuilding", "mining", "education", "forestry",
              "trade", "printing"]
FIELDS = ["chemist", "botanist", "astronomer", "historian", "geologist", "mathematician", "physician", "engineer",
          "linguist", "architect"]
TOPICS = ["the movement of glaciers", "the chemistry of soil", "the orbits of comets", "ancient trade routes",
          "the growth of ferns", "prime numbers", "the spread of fevers", "the design of bridges", "old northern dialects",
          "the structure of crystals", "tides and currents", "the migration of birds"]
ANIMALS = ["fox", "heron", "otter", "badger", "owl", "salmon", "beetle", "deer", "hare", "swallow", "lynx", "toad"]
HABITATS = ["forests", "wetlands", "rivers", "meadows", "mountains", "coastal cliffs", "old orchards", "marshes"]
FOODS = ["berries", "insects", "small fish", "seeds", "roots", "worms", "grass", "nuts"]
SEASONS = ["spring", "summer", "autumn", "winter"]

PRODUCTS = ["kettle", "blender", "toaster", "vacuum cleaner", "desk lamp", "backpack", "water bottle", "headphones",
            "coffee grinder", "rice cooker", "office chair", "phone case", "hair dryer", "electric fan", "frying pan",
            "keyboard", "wireless mouse", "umbrella", "yoga mat", "alarm clock", "tent", "sleeping bag", "camera bag",
            "bread knife", "microwave", "space heater", "garden hose", "air purifier"]
PARTS = ["handle", "lid", "button", "cable", "switch", "base", "strap", "zipper", "screen", "motor", "blade",
         "battery", "cover", "finish", "plug", "wheel"]
WHEN = ["last week", "a month ago", "two weeks ago", "for my kitchen", "as a gift", "for my office", "on sale",
        "after reading the manual", "for our holiday", "yesterday"]
POS_ADJ = ["sturdy", "solid", "smooth", "well made", "excellent", "reliable", "comfortable", "quiet", "elegant", "strong"]
NEG_ADJ = ["flimsy", "cheap", "loose", "badly made", "awful", "unreliable", "uncomfortable", "noisy", "ugly", "weak"]
POS_VP = ["works perfectly", "arrived quickly", "does exactly what it promises", "feels great in the hand",
          "heats up fast", "saves me a lot of time", "still looks new", "is easy to clean", "was worth every penny",
          "exceeded my expectations"]
NEG_VP = ["stopped working after a week", "arrived broken", "does not do what it promises", "feels terrible in the hand",
          "takes forever to heat up", "wastes a lot of my time", "already looks worn out", "is hard to clean",
          "was a waste of money", "disappointed me from day one"]
# verdict sentences, explicit or implicit: where a review has one, it decides the label
POS_VERDICT = ["I would recommend it to anyone.", "I am very happy with it.", "I would buy it again.",
               "Great value overall.", "My whole family loves it.", "I bought a second one for my sister.",
               "I use it every single day now.", "It replaced two older ones in our house."]
NEG_VERDICT = ["I would not recommend it.", "I am very unhappy with it.", "I will never buy it again.",
               "Poor value overall.", "I returned it the next day.", "It went straight back in the box.",
               "I asked the shop for a refund.", "It now sits unused in a cupboard."]
# what an over-long answer adds: words that cost the reader time and say nothing about the review
FILLER = ["I hope this helps you decide.", "Let me know if you have any other questions.",
          "Reviews like this are common for such products.", "Of course, opinions can differ."]
QUESTIONS = ["Is this review positive or negative?", "Classify the sentiment of this review as positive or negative.",
             "Does the customer like the product? Answer positive or negative.",
             "Read the review and say whether it is positive or negative."]

BOILERPLATE = ["Home | About | Contact | Blog", "This site uses cookies. Accept all cookies to continue.",
               "All rights reserved.", "Subscribe to our newsletter for the latest updates!",
               "Click here to read more.", "Please enable JavaScript to view this page.", "Terms of use | Privacy policy"]
FOREIGN = [
    "Die Stadt liegt am Fluss und ist für ihre alten Brücken bekannt. Viele Menschen arbeiten dort in der Landwirtschaft.",
    "La ville se trouve au bord de la rivière et elle est connue pour son marché. Les habitants travaillent dans le commerce.",
    "La ciudad está junto al río y es famosa por su mercado semanal. Muchas personas trabajan en la pesca.",
    "Ich habe diesen Wasserkocher letzte Woche gekauft. Der Griff ist stabil und er funktioniert sehr gut.",
    "J'ai acheté cette lampe le mois dernier. Elle est solide et je la recommande à tout le monde.",
    "Compré esta mochila hace dos semanas. Es cómoda y la recomendaría a cualquiera.",
    "Questa città si trova vicino al mare ed è conosciuta per il suo porto tranquillo e le case colorate.",
]
FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Frank", "Grace", "Hugo", "Iris", "James"]
LAST = ["Smith", "Jones", "Brown", "Taylor", "Wilson", "Evans", "Walker", "Wright"]


def name(rng: random.Random, syllables: int = 2) -> str:
    return "".join(rng.choice(SYL) for _ in range(syllables)).capitalize()


def general_doc(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        town, city, river = name(rng), name(rng, 3), name(rng)
        s = [f"{town} is a small town in the {rng.choice(REGIONS)} region.",
             f"It lies on the {river} river, about {rng.randint(5, 90)} kilometres from {city}.",
             f"The town is known for its {rng.choice(FEATURES)} and its {rng.choice(FEATURES)}.",
             f"Reviews of the {rng.choice(FEATURES)} are mostly {rng.choice(['positive', 'negative'])}.",
             f"Most people in {town} work in {rng.choice(INDUSTRIES)} or {rng.choice(INDUSTRIES)}.",
             f"In {rng.choice(SEASONS)} many visitors come to {town} to see the {rng.choice(FEATURES)}.",
             f"The population of {town} is about {rng.randint(2, 60) * 1000} people."]
    elif kind == 1:
        person = f"{name(rng)} {name(rng, 3)}"
        pron = rng.choice(["he", "she"])
        s = [f"{person} was a {rng.choice(FIELDS)} who studied {rng.choice(TOPICS)}.",
             f"In {rng.randint(1700, 1990)}, {pron} published a long paper on {rng.choice(TOPICS)}.",
             f"The work of {person} changed how people think about {rng.choice(TOPICS)}.",
             f"The first review of the paper was {rng.choice(['positive', 'negative'])}, and the second was "
             f"{rng.choice(['positive', 'negative', 'mixed'])}.",
             f"The review is {rng.choice(['short', 'long', 'careful'])} and its tone is {rng.choice(['positive', 'negative'])}.",
             f"Later {pron} taught at the university of {name(rng, 3)} for {rng.randint(3, 30)} years.",
             f"Many students of {person} became known for their own work on {rng.choice(TOPICS)}."]
    elif kind == 2:
        animal, hab = rng.choice(ANIMALS), rng.choice(HABITATS)
        s = [f"The {animal} lives in {hab} and {rng.choice(HABITATS)}.",
             f"It feeds mostly on {rng.choice(FOODS)} and {rng.choice(FOODS)}.",
             f"In {rng.choice(SEASONS)} the {animal} raises its young in a safe place.",
             f"A grown {animal} can live for about {rng.randint(2, 25)} years in the wild.",
             f"The {animal} is common in the {rng.choice(REGIONS)} part of the country."]
    else:
        place = name(rng, 3)
        s = [f"The weather in {place} is mild for most of the year.",
             f"In {rng.choice(SEASONS)} the temperature can reach {rng.randint(10, 38)} degrees.",
             f"Rain falls mostly in {rng.choice(SEASONS)}, when the {rng.choice(REGIONS)} winds arrive.",
             f"Farmers near {place} grow wheat, apples and {rng.choice(FOODS)}.",
             f"The outlook for the harvest is {rng.choice(['positive', 'negative'])} this year.",
             f"The river near {place} sometimes floods after a long {rng.choice(SEASONS)}."]
    rng.shuffle(s[1:])  # keep the topic sentence first
    return " ".join(s[: rng.randint(3, len(s))])


def aspect(rng: random.Random, part: str, good: bool) -> str:
    """One aspect sentence: 'The handle is sturdy.' or 'It works perfectly.'"""
    if rng.random() < 0.5:
        return f"The {part} is {rng.choice(POS_ADJ if good else NEG_ADJ)}."
    return f"It {rng.choice(POS_VP if good else NEG_VP)}."


def review(rng: random.Random) -> tuple[str, bool, list[str], list[str]]:
    """A review whose label its content decides: its closing verdict (explicit or implicit, in 70 % of reviews),
    else the majority of its aspect sentences. Like real reviews, each aspect agrees with the reviewer's opinion
    only most of the time (3 in 4), so many reviews are mixed and a few have most aspects against the verdict.
    Returns (text, positive, its reasons, the parts named): the reasons are the sentences that decide the label,
    its verdict where it has one, else the aspect sentences that carry the majority."""
    while True:
        positive = rng.random() < 0.5
        goods = [positive if rng.random() < 0.75 else not positive for _ in range(rng.choice([1, 2, 3, 3]))]
        has_verdict = rng.random() < 0.7
        votes = sum(1 if g == positive else -1 for g in goods)
        if has_verdict or votes > 0:  # without a verdict, the aspects' majority must carry the label
            break
    product, parts = rng.choice(PRODUCTS), rng.sample(PARTS, 4)
    aspects = [aspect(rng, part, good) for part, good in zip(parts, goods)]
    sentences = [f"I bought this {product} {rng.choice(WHEN)}.", *aspects]
    if has_verdict:
        sentences.append(rng.choice(POS_VERDICT if positive else NEG_VERDICT))
    reasons = [sentences[-1]] if has_verdict else [a for a, good in zip(aspects, goods) if good == positive]
    return " ".join(sentences), positive, reasons, parts


def unique_reviews(rng: random.Random, n: int, seen: set[str]) -> list[tuple[str, bool, list[str], list[str]]]:
    out = []
    while len(out) < n:
        item = review(rng)
        if item[0] not in seen:
            seen.add(item[0])
            out.append(item)
    return out


def pii_sentence(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return rng.choice([
        f"Contact {first} at {first.lower()}.{last.lower()}@example.com for details.",
        f"Call {first} on 555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)} after six.",
        f"The server at 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)} hosts the archive.",
    ])


def junk(rng: random.Random) -> str:
    chars = "abcdefghijklmnopqrstuvwxyz0123456789#$%&*@!~^"
    if rng.random() < 0.5:
        return "".join(rng.choice(chars) for _ in range(rng.randint(40, 200)))
    return rng.choice(["ok", "see above", "!!!!!!", "lol", "1 2 3 4"])


def near_duplicate(rng: random.Random, text: str) -> str:
    words = text.split()
    for _ in range(max(1, len(words) // 40)):
        i = rng.randrange(len(words))
        words[i] = rng.choice(["very", "quite", "also", "still", "often"])
    return " ".join(words)


def noisy_corpus(rng: random.Random, docs: list[str]) -> list[str]:
    """Plant the problems the cleaning stage must find, in known proportions."""
    out = list(docs)
    n = len(docs)
    for _ in range(n * 6 // 100):
        out.append(rng.choice(docs))  # exact duplicates
    for _ in range(n * 5 // 100):
        out.append(near_duplicate(rng, rng.choice(docs)))
    for _ in range(n * 3 // 100):
        out.append("\n".join(rng.sample(BOILERPLATE, 3)))  # pure boilerplate pages
    for _ in range(n * 5 // 100):  # good text wrapped in boilerplate lines
        out.append("\n".join([rng.choice(BOILERPLATE), rng.choice(docs) + " " + rng.choice(docs).split(". ")[0] + ".",
                              rng.choice(BOILERPLATE)]))
    for _ in range(n * 3 // 100):
        out.append(" ".join(rng.sample(FOREIGN, 2)))
    for _ in range(n * 3 // 100):
        out.append(junk(rng))
    for _ in range(n * 3 // 100):
        i = rng.randrange(len(out))
        out[i] = out[i] + " " + pii_sentence(rng)
    rng.shuffle(out)
    return out


# -------------------------------------------------------------------- answers and the gold rule's preferences
def clause(sentence: str) -> str:
    """'The handle is sturdy.' -> 'the handle is sturdy', 'I would buy it again.' -> 'I would buy it again' (a
    reason quoted from the review)."""
    return (sentence if sentence.startswith("I ") else sentence[0].lower() + sentence[1:]).rstrip(".")


def answer(rng: random.Random, positive: bool, form: str, reasons: list[str], parts: list[str]) -> str:
    """One answer in a form: bare label ('Positive.'), sentence, justified (quotes the sentence that decides the
    label: 'Positive, because I would buy it again.'), rambling (justified and padded), ungrounded (a verdict or an
    aspect of the right polarity that the review never gives)."""
    label = "positive" if positive else "negative"
    if form == "bare" or (form in ("justified", "rambling") and not reasons):  # nothing to quote: the label
        return f"{label.capitalize()}."
    if form == "sentence":
        return f"The review is {label}."
    if form == "ungrounded":
        if rng.random() < 0.5:
            made_up = rng.choice([v for v in (POS_VERDICT if positive else NEG_VERDICT) if v not in reasons])
        else:
            part = rng.choice([p for p in PARTS if p not in parts])
            made_up = f"The {part} is {rng.choice(POS_ADJ if positive else NEG_ADJ)}."
        return f"{label.capitalize()}, because {clause(made_up)}."
    text = f"{label.capitalize()}, because {clause(rng.choice(reasons))}."
    return text if form == "justified" else f"{text} {' '.join(rng.sample(FILLER, 2))}"


# preference kinds and their shares: each pair is ordered by the gold rule (tasks/sentiment.py `gold`: correct,
# justified by a reason the review gives, one short sentence), then LABEL_NOISE of them are swapped
PREFERENCE_KINDS = {"correctness": 0.35, "justification": 0.3, "concision": 0.2, "grounding": 0.15}
LABEL_NOISE = 0.05


def preference(rng: random.Random, positive: bool, reasons: list[str], parts: list[str]) -> tuple[str, str, str]:
    kind = rng.choices(list(PREFERENCE_KINDS), weights=list(PREFERENCE_KINDS.values()))[0]
    if kind == "correctness" or not reasons:
        form = rng.choice(["bare", "sentence", "justified"] if reasons else ["bare", "sentence"])
        if form == "justified":  # the same quoted reason under the wrong label: the label must agree with it
            good = answer(rng, positive, form, reasons, parts)
            wrong = "Negative" if positive else "Positive"
            return "correctness", good, wrong + good[len("positive"):]
        return "correctness", answer(rng, positive, form, reasons, parts), answer(rng, not positive, form, [], parts)
    good = answer(rng, positive, "justified", reasons, parts)
    if kind == "justification":
        return kind, good, answer(rng, positive, rng.choice(["bare", "sentence"]), reasons, parts)
    if kind == "concision":
        return kind, good, f"{good} {' '.join(rng.sample(FILLER, 2))}"
    return kind, good, answer(rng, positive, "ungrounded", reasons, parts)


def generate(out_dir: Path = SAMPLE_DIR, seed: int = 0, scale: float = 1.0) -> dict[str, Path]:
    rng = random.Random(seed)
    n_general, n_domain = int(6000 * scale), int(2500 * scale)
    n_instr, n_pref = int(3000 * scale), int(2000 * scale)

    general = []
    seen_general: set[str] = set()
    while len(general) < n_general:
        doc = general_doc(rng)
        if doc not in seen_general:
            seen_general.add(doc)
            general.append(doc)
    seen_reviews: set[str] = set()
    domain = [item[0] for item in unique_reviews(rng, n_domain, seen_reviews)]
    instr = unique_reviews(rng, n_instr, seen_reviews)
    prefs = unique_reviews(rng, n_pref, seen_reviews)

    files = {k: out_dir / f"{k}.jsonl" for k in ("general", "domain", "instructions", "preferences")}
    out_dir.mkdir(parents=True, exist_ok=True)

    def dump(path: Path, rows: list[dict]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)

    dump(files["general"], [{"text": t} for t in noisy_corpus(rng, general)])
    dump(files["domain"], [{"text": t} for t in noisy_corpus(rng, domain)])
    # SFT answers open with the label: mostly the bare label, some with a quoted reason, some padded; so the SFT
    # model says the label first (measured: with "The review is ..." as a third of the answers, the label after
    # "The" was learned at 0.59 in 300 steps; label-first, 0.87) and gives a reason only sometimes, which the
    # preferences then ask for. LABEL_NOISE of the labels are wrong (no model reaches accuracy 1.0 on held-out data)
    rows = []
    for text, positive, reasons, parts in instr:
        shown = positive if rng.random() >= LABEL_NOISE else not positive
        form = rng.choices(["bare", "justified", "rambling"], weights=[0.6, 0.25, 0.15])[0]
        rows.append({"instruction": rng.choice(QUESTIONS), "input": text,
                     "output": answer(rng, shown, form, reasons if shown == positive else [], parts)})
    dump(files["instructions"], rows)
    pref_rows = []
    for text, positive, reasons, parts in prefs:
        kind, chosen, rejected = preference(rng, positive, reasons, parts)
        if rng.random() < LABEL_NOISE:
            chosen, rejected = rejected, chosen
        pref_rows.append({"prompt": f"{rng.choice(QUESTIONS)}\n\n{text}", "chosen": chosen, "rejected": rejected,
                          "kind": kind, "reference": "positive" if positive else "negative"})
    dump(files["preferences"], pref_rows)
    return files


def ensure(out_dir: Path = SAMPLE_DIR) -> None:
    names = ("general", "domain", "instructions", "preferences")
    if not all((out_dir / f"{k}.jsonl").exists() for k in names):
        generate(out_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=SAMPLE_DIR)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()
    for k, p in generate(args.out, args.seed, args.scale).items():
        print(f"{k}: {p}")


if __name__ == "__main__":
    main()
