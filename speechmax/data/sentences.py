"""Random English sentences for the vocoder corpus: varied phonetic content, the 35 command words among
ordinary vocabulary, numbers and names, 2-8 seconds when spoken."""
from __future__ import annotations

import numpy as np

from .words import WORDS

__all__ = ["random_sentence", "random_text"]

_NOUNS = ("dog cat bird house tree river garden window table kitchen morning evening teacher doctor "
          "farmer child city village road bridge market train station letter story picture song voice "
          "water fire mountain island ocean forest flower apple bread coffee engine machine computer phone "
          "signal number answer question problem reason minute hour summer winter weather storm light shadow "
          "door floor wall chair paper pencil book music painting bottle basket wheel box rope ship plane "
          "friend neighbour brother sister mother father family student player driver captain sailor").split()
_ADJECTIVES = ("old young small large quiet loud bright dark warm cold green red yellow blue heavy light "
               "happy sad strange simple careful quick slow early late empty full clean broken gentle "
               "narrow wide busy lazy famous ordinary distant nearby wooden golden silver tired hungry").split()
_VERBS_PAST = ("found saw heard opened closed carried painted followed watched called visited cleaned "
               "moved lifted pushed pulled fixed built bought sold remembered forgot wanted needed "
               "described answered noticed finished started covered crossed").split()
_VERBS_BASE = ("go stop turn look listen wait move follow learn find bring take open close read write "
               "count sing walk run jump call try keep hold leave start finish help watch").split()
_ADVERBS = ("slowly quickly quietly carefully suddenly often rarely always never today yesterday "
            "tomorrow again together outside inside upstairs downstairs").split()
_PREPOSITIONS = "near under behind beside across through into over from with without toward".split()
_NAMES = ("Marvin Sheila Anna Peter Maria John Laura David Susan Thomas Helen Robert Alice Michael Emma "
          "George Sarah Daniel Julia Oliver").split()
_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve twenty hundred".split()
_DIRECTIONS = "up down left right forward backward on off".split()


def _pick(rng, seq):
    return seq[rng.integers(len(seq))]


def _noun_phrase(rng) -> str:
    det = _pick(rng, ("the", "a", "my", "our", "that", "every", "this"))
    adj = f"{_pick(rng, _ADJECTIVES)} " if rng.random() < 0.6 else ""
    rest = f"{adj}{_pick(rng, _NOUNS)}"
    if det == "a" and (rest[0] in "aeiou" or rest.startswith("hour")):
        det = "an"
    return f"{det} {rest}"


def random_sentence(rng: np.random.Generator) -> str:
    """One sentence from a handful of templates."""
    kind = rng.integers(7)
    if kind == 0:
        s = f"{_noun_phrase(rng)} {_pick(rng, _VERBS_PAST)} {_noun_phrase(rng)} {_pick(rng, _PREPOSITIONS)} " \
            f"{_noun_phrase(rng)}"
    elif kind == 1:
        s = f"{_pick(rng, _NAMES)} {_pick(rng, _VERBS_PAST)} {_noun_phrase(rng)} {_pick(rng, _ADVERBS)}"
    elif kind == 2:
        s = f"{_pick(rng, _VERBS_BASE)} {_pick(rng, _DIRECTIONS)}, then {_pick(rng, _VERBS_BASE)} " \
            f"{_pick(rng, _NUMBERS)} {_pick(rng, ('times', 'steps', 'metres', 'minutes'))}"
    elif kind == 3:
        s = f"please say {_pick(rng, WORDS)}, {_pick(rng, WORDS)} and {_pick(rng, WORDS)}"
    elif kind == 4:
        digits = " ".join(_pick(rng, _NUMBERS[:10]) for _ in range(rng.integers(3, 7)))
        s = f"the number is {digits}"
    elif kind == 5:
        s = f"did {_pick(rng, _NAMES)} {_pick(rng, _VERBS_BASE)} {_noun_phrase(rng)} " \
            f"{_pick(rng, _PREPOSITIONS)} {_noun_phrase(rng)}?"
    else:
        s = " ".join(_pick(rng, WORDS) for _ in range(rng.integers(3, 7)))
    s = s[0].upper() + s[1:]
    return s if s.endswith("?") else s + "."


def random_text(rng: np.random.Generator, sentences: tuple[int, int] = (1, 3)) -> str:
    """One utterance: 1-2 sentences (the upper bound is exclusive)."""
    return " ".join(random_sentence(rng) for _ in range(rng.integers(*sentences)))
