"""Tasks (tasks/): answer extraction and scoring on hand-made cases, fit checks, plugins and params-only tasks."""
from __future__ import annotations

import pytest

from core.errors import ConfigError
from tasks import TaskConfig, TaskMismatch, check_fit, load_task
from tasks.choice import choice_answer, options
from tasks.numeric import canonical, numeric_answer
from tasks.sentiment import answer_of


def record(prompt: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


@pytest.mark.parametrize("text, expected", [
    ("positive", "positive"), ("The review is Negative.\nmore text", "negative"), ("  \n", None),
    ("Positive, because the lid is sturdy.", "positive"),
    ("Negative, because it is not what I wanted.", "negative"),  # a negation in the reason is the reason's
    ("The review is not positive.", None), ("positive, I think not", None), ("It isn't negative.", None),
    ("positive or negative", None), ("The lid is sturdy.", None)])
def test_answer_of(text, expected):
    assert answer_of(text) == expected


REVIEW = [{"role": "user", "content": "Is this review positive or negative?\n\nI bought this kettle. "
                                     "The lid is sturdy. It arrived broken. I would buy it again."}]


@pytest.mark.parametrize("answer, expected", [
    ("positive", 0.7), ("The review is positive.", 0.7),
    ("Positive, because the lid is sturdy.", 1.0),  # a reason quoted from the review, one short sentence
    ("Positive, because the lid is sturdy. I hope this helps you decide.", 0.8),  # padded
    ("Positive, because the handle is smooth.", 0.7),  # a reason the review never gives
    ("Positive, because lid.", 0.7),  # too short to be a reason
    ("negative", 0.0), ("Negative, because it arrived broken.", 0.0), ("The review is not positive.", 0.0)])
def test_sentiment_gold_rule(answer, expected):
    task = load_task(TaskConfig(name="sentiment"))
    assert task.gold(answer, "positive", REVIEW) == pytest.approx(expected)


def test_a_task_without_a_gold_rule_is_judged_by_its_verifiable_reward():
    numeric = load_task(TaskConfig(name="numeric"))
    assert numeric.gold("so 42", "#### 42", []) == 1.0 and numeric.gold("so 41", "#### 42", []) == 0.0
    free = load_task(TaskConfig(name="free_form"))
    assert free.gold("print(1)", "print(1)", []) == pytest.approx(free.reward("print(1)", "print(1)", []))


def test_sentiment_reads_only_its_labels():
    task = load_task(TaskConfig(name="sentiment"))
    p = REVIEW
    assert task.extract("The review is positive.", p) == "positive"
    assert task.extract("def f(): return 1", p) is None
    assert task.score("positive", "The review is positive.", p) == 1.0
    assert task.score("negative", "positive", p) == 0.0
    m = task.metrics(["positive", "Negative, because it arrived broken.", "meh", "Positive, because it broke."],
                     ["positive", "positive", "negative", "positive"], [p] * 4)
    assert m == {"task_accuracy": pytest.approx(2 / 4), "answer_rate": pytest.approx(3 / 4),
                 "justified_share": pytest.approx(1 / 4), "concise_share": pytest.approx(1.0)}


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72", "72"),
    ("#### 1,000", "1000"), ("The answer is $18.", "18"), ("She pays $1,234.50 in total", "1234.5"),
    ("It is 18.0", "18"), ("-3 degrees, then 5", "5"), ("x is -3", "-3"), ("about 0.50 of it", "0.5"),
    ("1e3 grams", "1000"), ("no number here", None), ("#### ", None), ("", None),
    ("18 apples, so #### 20", "20"), ("first 3, then the answer: 42.", "42"), ("#### -7", "-7"),
    # hyphens are not minus signs; commas only group thousands; fractions are values; huge numbers do not crash
    ("10-5", "5"), ("5-10 apples", "10"), ("1,2,3", "3"), ("1,234,567", "1234567"), ("2/3", "2/3"),
    ("4/6 of them", "2/3"), ("1e30", None), ("12 and 1e30", "12")])
def test_numeric_extraction(text, expected):
    assert numeric_answer(text) == expected


def test_numeric_values_compare_as_numbers():
    assert canonical("18") == canonical("18.0") == canonical("$18") == canonical("18.00") == "18"
    assert canonical("1,000") == "1000" and canonical("abc") is None
    task = load_task(TaskConfig(name="numeric"))
    assert task.score("so she has $1,000.", "She had 500 twice.\n#### 1000", []) == 1.0
    assert task.score("so she has 999", "#### 1000", []) == 0.0
    assert task.score("I don't know", "#### 1000", []) == 0.0


PROMPT = [{"role": "user", "content": "Which gas do plants take in?\nA. Oxygen\nB) Carbon dioxide\n(C) Nitrogen\n"
                                      "D: Helium"}]


def test_choice_options_and_answers():
    offered = options(PROMPT)
    assert offered == {"A": "Oxygen", "B": "Carbon dioxide", "C": "Nitrogen", "D": "Helium"}
    for text in ("B", "(B)", "b.", "The answer is B.", "Answer: (b)", "B) Carbon dioxide", "carbon dioxide",
                 "They take in carbon dioxide from the air."):
        assert choice_answer(text, offered) == "B", text
    assert choice_answer("E", offered) is None  # not an offered letter
    words = {"A": "apple", "B": "car", "C": "a pear", "D": "a"}
    assert choice_answer("Scary question", words) is None  # options match whole words only
    assert choice_answer("apple or car?", words) is None  # two options named: no answer
    assert choice_answer("The answer is a car", {"A": "apple", "B": "car"}) == "B"  # the article is not "A"
    assert choice_answer("I am not sure", offered) is None
    assert choice_answer("B", {}) is None  # no options in the prompt: nothing to choose from
    task = load_task(TaskConfig(name="choice"))
    assert task.score("The answer is B", "Carbon dioxide", PROMPT) == 1.0
    assert task.score("A", "B", PROMPT) == 0.0


def test_free_form_scores_overlap_and_reports_no_accuracy():
    task = load_task(TaskConfig(name="free_form"))
    assert not task.checkable and task.primary_metric == "chrf"
    refs = ["def add(a, b):\n    return a + b", "print('hi')"]
    m = task.metrics(["def add(a, b):\n    return a + b", "print('bye')"], refs, [[], []])
    assert "task_accuracy" not in m
    assert m["exact_match"] == 0.5 and 0 < m["chrf"] < 100 and 0 < m["rouge_l"] < 1
    assert task.reward("def add(a, b):  return a + b", refs[0], []) > task.reward("x = 1", refs[0], [])
    assert task.reward(refs[0], refs[0], []) == pytest.approx(1.0)


def test_regex_task_from_params_alone():
    task = load_task(TaskConfig(name="regex", answer_pattern=r"Answer:\s*(\w+)"))
    assert task.extract("reasoning... Answer: Yes", []) == "yes"
    assert task.score("Answer: yes", "so. Answer: YES", []) == 1.0 and task.score("yes", "Answer: yes", []) == 0.0
    with pytest.raises(ConfigError, match="task.answer_pattern"):
        load_task(TaskConfig(name="regex"))
    with pytest.raises(ConfigError, match="one group"):
        load_task(TaskConfig(name="regex", answer_pattern="Answer"))


def test_a_users_task_is_one_small_file(tmp_path, monkeypatch):
    (tmp_path / "my_task.py").write_text(
        "from tasks.base import Task\n\n"
        "class YesNo(Task):\n"
        "    name = 'yes_no'\n\n"
        "    def extract(self, response, prompt):\n"
        "        words = response.lower().split()\n"
        "        return words[0].strip('.,!') if words and words[0].strip('.,!') in ('yes', 'no') else None\n")
    task = load_task(TaskConfig(name=str(tmp_path / "my_task.py")))
    assert task.name == "yes_no" and task.score("Yes, it is.", "yes", []) == 1.0
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_task(TaskConfig(name="my_task:YesNo")).name == "yes_no"
    with pytest.raises(ConfigError, match="cannot import 'no_such_task'"):
        load_task(TaskConfig(name="no_such_task"))
    with pytest.raises(ConfigError, match="has no 'Nope'"):
        load_task(TaskConfig(name="my_task:Nope"))
    (tmp_path / "half_task.py").write_text("from tasks.base import Task\n\nclass Half(Task):\n    name = 'half'\n")
    with pytest.raises(ConfigError, match="half_task:Half does not implement extract"):
        load_task(TaskConfig(name="half_task:Half"))


def test_a_task_that_cannot_read_the_references_stops_naming_one_that_can():
    code = [record(f"Write function {i}", f"def f{i}(x):\n    return x * {i}") for i in range(20)]
    with pytest.raises(TaskMismatch) as err:
        check_fit(load_task(TaskConfig(name="sentiment")), code, "in/code.json")
    message = str(err.value)
    assert "in/code.json: task 'sentiment' reads no answer from 20 of 20 references" in message
    assert message.splitlines()[-1].strip() == "lifecycle run --set task.name=free_form"
    # GSM8K-style references: the numeric task is suggested, and fits
    gsm = [record(f"Q{i}", f"Half of {2 * i} is {i}.\n#### {i}") for i in range(20)]
    with pytest.raises(TaskMismatch) as err:
        check_fit(load_task(TaskConfig(name="sentiment")), gsm, "gsm.jsonl")
    assert str(err.value).splitlines()[-1].strip() == "lifecycle run --set task.name=numeric"
    check_fit(load_task(TaskConfig(name="numeric")), gsm, "gsm.jsonl")
    # most references readable is enough (min_fit)
    check_fit(load_task(TaskConfig(name="numeric")), gsm[:15] + code[:5], "mixed")
    with pytest.raises(TaskMismatch):
        check_fit(load_task(TaskConfig(name="numeric", min_fit=0.9)), gsm[:15] + code[:5], "mixed")
