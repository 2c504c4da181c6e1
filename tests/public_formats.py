"""Small fixtures written in the formats public data sets ship in, for tests of the data people bring.

Each writer makes deterministic, original text shaped like the real thing:
- a play (plain text, one speech per blank-line-separated block, as Project Gutenberg's plays),
- GSM8K (`question`/`answer` JSONL, worked solution ending in `#### <number>`),
- Alpaca code instructions (a JSON array of `instruction`/`input`/`output`, as code_alpaca_20k),
- ShareGPT (`conversations` of `from`/`value` turns), OpenAI chat `messages` with a system turn,
- hh-rlhf (multi-turn `chosen`/`rejected` conversations in the `\\n\\nHuman: ... \\n\\nAssistant: ...` style).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SPEAKERS = ["HAMLET", "HORATIO", "OPHELIA", "POLONIUS", "LAERTES", "GERTRUDE", "CLAUDIUS", "MARCELLUS"]
PLAY_WORDS = ("thou thee thy doth hath art shalt wherefore prithee anon nay ay good lord lady heaven night "
              "king queen father mother sword crown blood grief love honour shame fortune soul heart eyes hand "
              "speak hear tell know think fear come go stay weep sleep dream die live swear bear mark make").split()
NAMES = ["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis", "Tina", "Randy", "Mark", "Joy",
         "Priya", "Omar", "Lena", "Carlos", "Mei", "Tom", "Aisha", "Diego", "Hana", "Ivan", "Zoe", "Raj"]
ITEMS = ["clips", "apples", "pencils", "stickers", "cookies", "marbles", "books", "shells", "cards", "eggs", "coins",
         "stamps", "beads", "roses", "buttons", "lemons", "candles", "ribbons", "tickets", "plates"]
PLACES = ["the market", "school", "the library", "a fair", "the bakery", "the garden", "a yard sale", "the beach",
          "the museum shop", "a craft club", "the harbour", "the farm stand", "the train station", "a bookshop"]
REASONS = ["for a party", "for her class", "as gifts", "for a school project", "to sell later", "for the holidays",
           "to share with friends", "for a collection", "for the weekend", "for a charity drive"]
TEMPLATES = [
    ("{name} bought {a} {item} at {place} {reason}, packed in each of {b} bags, and then got {c} more. "
     "How many {item} does {name} have now?", "{name} bought {a}*{b} = <<{a}*{b}={ab}>>{ab} {item} in the bags."),
    ("At {place}, {name} sees {b} shelves holding {a} {item} each. {name} adds {c} {item} {reason}. "
     "How many {item} are there altogether?", "The shelves hold {a}*{b} = <<{a}*{b}={ab}>>{ab} {item}."),
    ("{name} collects {item} {reason}. Every week for {b} weeks {name} gets {a} of them from {place}, and a friend "
     "gives {c} extra. What is the total?", "Over the weeks {name} gets {a}*{b} = <<{a}*{b}={ab}>>{ab} {item}."),
    ("There are {b} tables at {place} and each one has {a} {item} on it. Later {c} {item} arrive {reason}. "
     "Count all the {item}.", "The tables have {b}*{a} = <<{b}*{a}={ab}>>{ab} {item}."),
]


def play(path: Path, speeches: int = 400, seed: int = 0) -> Path:
    """An early-modern-English play: speaker, then verse lines; speeches separated by blank lines."""
    rng = random.Random(seed)
    blocks = []
    for i in range(speeches):
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(PLAY_WORDS) for _ in range(rng.randint(5, 9))]
            lines.append(" ".join(words).capitalize() + rng.choice([",", ";", ".", "!", "?"]))
        blocks.append(f"{SPEAKERS[i % len(SPEAKERS)]}.\n" + "\n".join(lines))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def gsm8k_rows(n: int, seed: int = 0) -> list[dict]:
    """GSM8K-style word problems: two steps of arithmetic, the solution's calculator annotations, `#### answer`."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question, step = rng.choice(TEMPLATES)
        a, b, c = rng.randint(2, 60), rng.randint(2, 9), rng.randint(1, 30)
        values = {"name": rng.choice(NAMES), "item": rng.choice(ITEMS), "place": rng.choice(PLACES),
                  "reason": rng.choice(REASONS), "a": a, "b": b, "c": c, "ab": a * b}
        total = a * b + c
        rows.append({"question": question.format(**values),
                     "answer": step.format(**values) + f"\nThen {a * b}+{c} = <<{a * b}+{c}={total}>>{total}."
                                                       f"\n#### {total}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def gsm8k(path: Path, n: int = 300, seed: int = 0) -> Path:
    return write_jsonl(path, gsm8k_rows(n, seed))


def math_corpus(path: Path, n: int = 400, seed: int = 1) -> Path:
    """Worked solutions as a `text` corpus (a math domain corpus, as a user would bring one)."""
    return write_jsonl(path, [{"text": f"{r['question']}\n{r['answer']}"} for r in gsm8k_rows(n, seed)])


def alpaca_code(path: Path, n: int = 120, seed: int = 0) -> Path:
    """code_alpaca-style instructions: a JSON array of instruction/input/output records."""
    rng = random.Random(seed)
    ops = [("add", "+"), ("subtract", "-"), ("multiply", "*")]
    rows = []
    for i in range(n):
        verb, op = rng.choice(ops)
        k = rng.randint(2, 99)
        rows.append({"instruction": f"Write a Python function named f{i} that should {verb} {k} and its argument.",
                     "input": "" if i % 3 else f"For example f{i}(1).",
                     "output": f"def f{i}(x):\n    return x {op} {k}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def sharegpt(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        rows.append({"id": f"conv{i}", "conversations": [
            {"from": "system", "value": "You are a careful assistant."},
            {"from": "human", "value": f"What is {a} plus {b}? (question {i})"},
            {"from": "gpt", "value": f"{a} plus {b} is {a + b}."}]})
    return write_jsonl(path, rows)


def openai_messages(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = rng.randint(1, 50)
        rows.append({"messages": [{"role": "system", "content": "Answer with a number."},
                                  {"role": "user", "content": f"Double {a}. (item {i})"},
                                  {"role": "assistant", "content": str(2 * a)}]})
    return write_jsonl(path, rows)


def hh_rlhf(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Multi-turn hh-rlhf pairs: shared turns, then a helpful (chosen) and an unhelpful (rejected) last answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = gsm8k_rows(1, seed * 100_000 + i)[0]
        total = r["answer"].rsplit("#### ", 1)[1]
        shared = (f"\n\nHuman: I need help with a word problem.\n\nAssistant: Of course, what is it?"
                  f"\n\nHuman: {r['question']}\n\nAssistant:")
        good = f" {r['answer'].splitlines()[0]} So the answer is {total}."
        bad = rng.choice([" I am not sure.", f" The answer is {int(total) + rng.randint(1, 9)}.", " Count them."])
        rows.append({"chosen": shared + good, "rejected": shared + bad})
    return write_jsonl(path, rows)
