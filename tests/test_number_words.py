"""Number words: known English and Spanish spellings (every Spanish irregular form), a closed
vocabulary, one spelling per number, and `pairs` draws that are seeded, distinct and respect
`exclude`."""

import numpy as np
import pytest

from fmjax.data.number_words import LANGUAGES, MAX_NUMBER, digits, english, pairs, spanish

ENGLISH = {
    0: "zero", 7: "seven", 10: "ten", 13: "thirteen", 19: "nineteen", 20: "twenty",
    21: "twenty one", 40: "forty", 99: "ninety nine", 100: "one hundred",
    105: "one hundred five", 110: "one hundred ten", 342: "three hundred forty two",
    1000: "one thousand", 1001: "one thousand one", 2019: "two thousand nineteen",
    12_345: "twelve thousand three hundred forty five", 21_000: "twenty one thousand",
    80_080: "eighty thousand eighty", 100_000: "one hundred thousand",
    101_000: "one hundred one thousand", 200_001: "two hundred thousand one",
    700_015: "seven hundred thousand fifteen", 999_000: "nine hundred ninety nine thousand",
    999_999: "nine hundred ninety nine thousand nine hundred ninety nine",
}

SPANISH = {
    0: "cero", 1: "uno", 15: "quince", 16: "dieciséis", 20: "veinte", 21: "veintiuno",
    22: "veintidós", 23: "veintitrés", 26: "veintiséis", 30: "treinta", 31: "treinta y uno",
    100: "cien", 101: "ciento uno", 200: "doscientos", 500: "quinientos", 700: "setecientos",
    900: "novecientos", 1000: "mil", 1001: "mil uno", 1100: "mil cien", 2000: "dos mil",
    21_000: "veintiún mil", 21_021: "veintiún mil veintiuno", 31_000: "treinta y un mil",
    100_000: "cien mil", 101_000: "ciento un mil", 116_000: "ciento dieciséis mil",
    200_001: "doscientos mil uno", 555_555: "quinientos cincuenta y cinco mil quinientos "
    "cincuenta y cinco", 999_999: "novecientos noventa y nueve mil novecientos noventa y nueve",
}

ENGLISH_VOCAB = set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand".split())

SAMPLE = np.random.default_rng(0).integers(0, MAX_NUMBER + 1, size=3000).tolist()


@pytest.mark.parametrize("n,words", ENGLISH.items())
def test_english_known_values(n, words):
    assert english(n) == words


@pytest.mark.parametrize("n,words", SPANISH.items())
def test_spanish_known_values(n, words):
    assert spanish(n) == words


def test_digits_and_language_registry():
    assert digits(342017) == "3 4 2 0 1 7"
    assert digits(0) == "0"
    assert LANGUAGES == {"en": english, "es": spanish, "digits": digits}


def test_english_is_single_spaced_and_uses_a_closed_vocabulary():
    for n in SAMPLE + list(range(1100)):
        text = english(n)
        assert text == text.strip() and "  " not in text, n
        assert set(text.split()) <= ENGLISH_VOCAB, n


def test_spanish_shortens_uno_exactly_before_mil():
    for n in SAMPLE + list(range(0, MAX_NUMBER + 1, 1000)):
        words = spanish(n).split()
        for word, after in zip(words, words[1:] + [None]):
            if word in ("uno", "veintiuno", "un", "veintiún"):
                assert (after == "mil") == (word in ("un", "veintiún")), (n, words)
        assert words[:2] != ["un", "mil"], n   # 1000 is "mil", never "un mil"


@pytest.mark.parametrize("language", ["en", "es", "digits"])
def test_every_number_has_its_own_spelling(language):
    numbers = sorted(set(SAMPLE + list(range(2100))))
    assert len({LANGUAGES[language](n) for n in numbers}) == len(numbers)


@pytest.mark.parametrize("n", [-1, MAX_NUMBER + 1, 10**9])
@pytest.mark.parametrize("language", ["en", "es", "digits"])
def test_out_of_range_is_rejected(language, n):
    with pytest.raises(ValueError, match="0..999999"):
        LANGUAGES[language](n)


def test_pairs_are_seeded_distinct_and_translate_the_same_number():
    first = pairs(200, seed=3, max_number=999)
    assert first == pairs(200, seed=3, max_number=999)
    assert first != pairs(200, seed=4, max_number=999)
    assert len({source for source, _ in first}) == 200
    for source, target in pairs(200, seed=3, max_number=999, source="digits", target="es"):
        assert target == spanish(int(source.replace(" ", "")))


def test_pairs_respect_exclude_and_can_use_every_remaining_number():
    held_out = {n for n in range(50) if n % 3 == 0}                   # 17 numbers
    drawn = pairs(33, seed=0, max_number=49, source="digits", target="en", exclude=held_out)
    numbers = {int(source.replace(" ", "")) for source, _ in drawn}
    assert numbers == set(range(50)) - held_out
    with pytest.raises(ValueError, match="cannot draw 34 distinct numbers"):
        pairs(34, seed=0, max_number=49, exclude=held_out)


def test_pairs_rejects_unknown_languages():
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        pairs(1, seed=0, max_number=10, target="fr")
