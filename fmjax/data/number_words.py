"""Integers 0..999,999 written as English words, Spanish words or spaced digits, for an offline
synthetic translation task (e.g. English number words -> Spanish number words) scored with BLEU.

Spanish has the irregular forms a model must learn: 16-29 are single words (dieciséis,
veintidós), 100 is "cien" but 101 "ciento uno", 500 "quinientos", 1000 "mil" (not "un mil"), and
"uno" shortens to "un" before "mil" (veintiún mil, treinta y un mil, ciento un mil).
"""

import operator
from typing import Callable, Iterable

import numpy as np

MAX_NUMBER = 999_999

EN_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
           "fourteen fifteen sixteen seventeen eighteen nineteen").split()
EN_TENS = ("_ _ twenty thirty forty fifty sixty seventy eighty ninety").split()

# Spanish writes 0-29 as single words, so they are one table.
ES_UNITS = ("cero uno dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce "
            "quince dieciséis diecisiete dieciocho diecinueve veinte veintiuno veintidós "
            "veintitrés veinticuatro veinticinco veintiséis veintisiete veintiocho "
            "veintinueve").split()
ES_TENS = "_ _ _ treinta cuarenta cincuenta sesenta setenta ochenta noventa".split()
ES_HUNDREDS = ("_ ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos "
               "ochocientos novecientos").split()
ES_BEFORE_MIL = {"uno": "un", "veintiuno": "veintiún"}   # apocope of "uno" before a noun


def _check(n: int) -> int:
    n = operator.index(n)   # ints and numpy ints; a float is a TypeError, not silently truncated
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number words cover 0..{MAX_NUMBER}, got {n}")
    return n


def _english_below_1000(n: int) -> list[str]:
    """Words for 0 < n < 1000 (no words for 0, which only appears as a whole number)."""
    hundreds, rest = divmod(n, 100)
    words = [EN_ONES[hundreds], "hundred"] if hundreds else []
    if rest >= 20:
        words.append(EN_TENS[rest // 10])
        rest %= 10
    if rest:
        words.append(EN_ONES[rest])
    return words


def _spanish_below_1000(n: int) -> list[str]:
    """Words for 0 < n < 1000 (no words for 0)."""
    if n == 100:
        return ["cien"]
    hundreds, rest = divmod(n, 100)
    words = [ES_HUNDREDS[hundreds]] if hundreds else []
    if rest >= 30:
        words.append(ES_TENS[rest // 10])
        if rest % 10:
            words += ["y", ES_UNITS[rest % 10]]
    elif rest:
        words.append(ES_UNITS[rest])
    return words


def english(n: int) -> str:
    """`n` in English words, lowercase, without hyphens or "and": 342 -> "three hundred forty two"."""
    n = _check(n)
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = _english_below_1000(thousands) + ["thousand"] if thousands else []
    return " ".join(words + _english_below_1000(rest))


def spanish(n: int) -> str:
    """`n` in Spanish words with accents: 21_000 -> "veintiún mil", 101 -> "ciento uno"."""
    n = _check(n)
    if n == 0:
        return "cero"
    thousands, rest = divmod(n, 1000)
    words = []
    if thousands == 1:
        words = ["mil"]
    elif thousands:
        words = _spanish_below_1000(thousands)
        words[-1] = ES_BEFORE_MIL.get(words[-1], words[-1])
        words.append("mil")
    return " ".join(words + _spanish_below_1000(rest))


def digits(n: int) -> str:
    """`n` as space-separated digits, so sacreBLEU scores each digit: 342017 -> "3 4 2 0 1 7"."""
    return " ".join(str(_check(n)))


LANGUAGES: dict[str, Callable[[int], str]] = {"en": english, "es": spanish, "digits": digits}


def sample_numbers(count: int, seed: int, max_number: int,
                   exclude: Iterable[int] = ()) -> list[int]:
    """`count` distinct numbers drawn uniformly from [0, max_number] minus `exclude` (exclude
    the eval numbers to keep a train set disjoint from it)."""
    _check(max_number)
    allowed = np.setdiff1d(np.arange(max_number + 1), np.fromiter(exclude, dtype=np.int64))
    if not 0 <= count <= len(allowed):
        raise ValueError(f"cannot draw {count} distinct numbers from [0, {max_number}]: only "
                         f"{len(allowed)} remain after excluding the given numbers")
    return np.random.default_rng(seed).choice(allowed, size=count, replace=False).tolist()


def pairs(count: int, seed: int, max_number: int, source: str = "en", target: str = "es",
          exclude: Iterable[int] = ()) -> list[tuple[str, str]]:
    """`sample_numbers(...)` as (source text, target text)."""
    for language in (source, target):
        if language not in LANGUAGES:
            raise ValueError(f"unknown language {language!r}; choose from {sorted(LANGUAGES)}")
    to_source, to_target = LANGUAGES[source], LANGUAGES[target]
    return [(to_source(n), to_target(n))
            for n in sample_numbers(count, seed, max_number, exclude)]
