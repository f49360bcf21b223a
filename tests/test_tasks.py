"""Gold-task checkers on hand-written correct and incorrect answers, and their loaders' errors."""
from __future__ import annotations

import json

import pytest

from rmexp.tasks import TASKS, TaskError, TaskItem, items_from_rows, load_items
from rmexp.tasks.hendrycks_math import last_boxed


def _gold(task: str, row: dict, response: str) -> float:
    item = items_from_rows(task, [row], "<test>")[0]
    return TASKS[task].gold(item, response)


GSM_ROW = {"question": "Tom has 1,200 apples and buys 34 more. How many?",
           "answer": "1200 + 34 = 1234\n#### 1,234"}


@pytest.mark.parametrize("response, expected", [
    ("He has 1,234 apples.", 1.0),               # thousands separator
    ("1200 + 34 = 1234. The answer is 1234", 1.0),
    ("The total is $1,234.00", 1.0),             # currency and decimals
    ("#### 1234\nThat took 5 minutes.", 1.0),    # an explicit #### wins over later numbers
    ("He has 1,235 apples.", 0.0),
    ("1234 apples, wait, 1233", 0.0),            # the last number is the answer
    ("I don't know.", 0.0),
])
def test_gsm8k(response, expected):
    assert _gold("gsm8k", GSM_ROW, response) == expected


def test_gsm8k_gold_must_be_a_number():
    with pytest.raises(TaskError, match=r"row 0: answer has no '#### <number>'"):
        items_from_rows("gsm8k", [{"question": "q", "answer": "42"}], "<f>")


@pytest.mark.parametrize("gold, response, expected", [
    ("\\frac{1}{2}", "So the result is \\boxed{0.5}.", 1.0),
    ("\\frac{1}{2}", "The answer is $\\dfrac{1}{2}$", 1.0),
    ("2\\sqrt{2}", "\\boxed{\\sqrt{8}}", 1.0),
    ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", 0.0),
    ("3", "\\boxed{4}", 0.0),
])
def test_math_equivalence(gold, response, expected):
    assert _gold("math", {"problem": "p", "answer": gold}, response) == expected


def test_math_gold_from_solution_boxed():
    row = {"problem": "p", "solution": "Work... so $x = \\boxed{\\frac{3}{4}}$."}
    item = items_from_rows("math", [row], "<f>")[0]
    assert item.reference["answer"] == "\\frac{3}{4}"
    assert last_boxed("\\boxed{a} then \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert last_boxed("no box") is None


def test_popqa():
    row = {"question": "Who wrote X?", "possible_answers": json.dumps(["Jane Doe", "J. Doe"])}
    assert _gold("popqa", row, "It was written by jane  doe in 1900.") == 1.0
    assert _gold("popqa", row, "John Smith") == 0.0


def _ifeval(ids, kwargs, response):
    return _gold("ifeval", {"prompt": "p", "instruction_id_list": ids, "kwargs": kwargs}, response)


@pytest.mark.parametrize("iid, kw, yes, no", [
    ("punctuation:no_comma", {}, "No commas here.", "One, two."),
    ("change_case:english_lowercase", {}, "all lower case.", "Not all lower."),
    ("change_case:english_capital", {}, "ALL CAPS.", "Mostly CAPS but not all."),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "two words", "one two three"),
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "one two three", "one two"),
    ("keywords:existence", {"keywords": ["apple", "pear"]}, "An Apple and a pear.", "An apple only."),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A category.", "A cat sat."),
    ("keywords:frequency", {"keyword": "ok", "frequency": 2, "relation": "at least"}, "ok OK", "ok"),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "less than"}, "zebra", "zzz"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n* b", "* a\n* b\n- c"),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and *two*", "*one* and **"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nfoo\nSection 2\nbar", "Section 1\nfoo"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:title", {}, "<<My Title>>\ntext", "<<>> text"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [address]", "[name]"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\nP.S. bye", "Hi. bye"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\nb", "a\n***\n***\nb"),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First.\n\nThen, more.", "First.\n\nAnd more."),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. any other questions?", "Done."),
    ("startend:quotation", {}, '"quoted"', 'not "quoted"'),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi"}, "say hi. Hi!", "Hi!"),
    ("combination:two_responses", {}, "one******two", "one******one"),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "THE END of STORY", "The END"),
])
def test_ifeval_checks(iid, kw, yes, no):
    assert _ifeval([iid], [kw], yes) == 1.0
    assert _ifeval([iid], [kw], no) == 0.0


def test_ifeval_share_of_instructions_and_unknown_ids():
    score = _ifeval(["punctuation:no_comma", "startend:end_checker"], [{}, {"end_phrase": "bye"}], "hello, bye")
    assert score == 0.5
    with pytest.raises(TaskError, match=r"language:response_language.*no check here"):
        _ifeval(["language:response_language"], [{"language": "fr"}], "bonjour")


def test_load_items_from_a_file_and_clear_errors(tmp_path):
    f = tmp_path / "gsm8k.jsonl"
    f.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(10)))
    items = load_items("gsm8k", str(f), split="test", size=4, seed=0)
    assert len(items) == 4 and items == load_items("gsm8k", str(f), split="test", size=4, seed=0)
    assert all(isinstance(i, TaskItem) for i in items)
    with pytest.raises(TaskError, match=r"task=gsm8k: .*does not exist"):
        load_items("gsm8k", str(tmp_path / "missing.jsonl"), split="test", size=0, seed=0)
    with pytest.raises(TaskError, match=r"missing column\(s\) \['answer'\]"):
        items_from_rows("gsm8k", [{"question": "q"}], "<f>")
    with pytest.raises(TaskError, match="not a registered task"):
        load_items("nope", str(f), split="test", size=0, seed=0)
