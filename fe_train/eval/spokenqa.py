"""SpokenQA scoring: a reply is correct when any gold answer, normalised, is contained in it, normalised.

The paper's rule (normalised text, containment), made exact here:

- lower case; accents removed (NFKD, combining marks dropped); each character of a
  script written without spaces (Chinese, Japanese, Korean) is a word of its own;
- acronym dots dropped ("U.S.A." -> "usa"); digit groups joined ("1,000" -> "1000"); every other character that is not a
  letter or digit (punctuation, hyphens, apostrophes) becomes a space, except a
  point inside a number ("3.5");
- number words become digits: "twenty-one" -> "21", "one hundred and five" ->
  "105", "four" -> "4", so that "4" and "four" match;
- the articles a, an, the are removed;
- containment is by whole words: the answer's words must appear consecutively in
  the reply's words, so "4" is not found in "1945" nor "cat" in "category".

An answer that normalises to nothing (e.g. "The") never matches and is counted.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from fe_train.config import Config
from fe_train.data.pipeline import Example, RawSample
from fe_train.data.schema import SampleError
from fe_train.data.speech_input import read_meta
from fe_train.eval.assembly import speech_llm
from fe_train.eval.bootstrap import Bootstrap
from fe_train.eval.gather import real_rows
from fe_train.eval.report import confidence_label, markdown_table, percent
from fe_train.eval.tasks import Replier, SpokenPrompt, bootstrap_of

ARTICLES = frozenset({"a", "an", "the"})
UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_ACRONYM = re.compile(r"\b(?:[^\W\d_]\.){2,}")
_GROUPED = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_NOT_WORD = re.compile(r"[^\w\u2024]+|_+")
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af])")


def normalize(text: str) -> list[str]:
    """The words of ``text`` after the rules above."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = unicodedata.normalize("NFC", "".join(c for c in text if not unicodedata.combining(c)))  # Hangul recomposes
    text = _ACRONYM.sub(lambda m: m.group(0).replace(".", ""), text)  # "u.s.a." -> "usa"
    text = _DECIMAL.sub("\u2024", _GROUPED.sub("", text))  # a decimal point survives the punctuation rule as U+2024
    text = _CJK.sub(r" \1 ", text)  # scripts written without spaces: each character is a word
    words = _NOT_WORD.sub(" ", text).replace("\u2024", ".").split()
    return [w for w in numbers_to_digits(words) if w not in ARTICLES]


def numbers_to_digits(words: list[str]) -> list[str]:
    """Runs of number words become one number; "and" joins only inside a run after "hundred" or a scale."""
    out: list[str] = []
    i = 0
    while i < len(words):
        value, used = _read_number(words, i)
        if used:
            out.append(str(value))
            i += used
        else:
            out.append(words[i])
            i += 1
    return out


def _read_number(words: list[str], start: int) -> tuple[int, int]:
    """(value, words used) of the number spelled from ``start``; (0, 0) when none starts there."""
    total = current = 0
    last = None  # kind of the previous number word: unit, teen, tens, hundred, scale
    i = start
    if words[i] == "a" and i + 1 < len(words) and _kind(words[i + 1]) in ("hundred", "scale"):
        current, last, i = 1, "unit", i + 1  # "a hundred", "a million"
    while i < len(words):
        word = words[i]
        if word == "and" and last in ("hundred", "scale") and i + 1 < len(words) and _kind(words[i + 1]) in ("unit", "teen", "tens"):
            i += 1
            continue
        kind = _kind(word)
        if kind is None or not _follows(last, kind):
            break
        if kind in ("unit", "teen"):
            current += UNITS[word]
        elif kind == "tens":
            current += TENS[word]
        elif kind == "hundred":
            current = max(current, 1) * 100
        else:
            total += max(current, 1) * SCALES[word]
            current = 0
        last = kind
        i += 1
    if last is None:
        return 0, 0
    return total + current, i - start


def _kind(word: str) -> str | None:
    if word in UNITS:
        return "teen" if UNITS[word] >= 10 else "unit"
    if word in TENS:
        return "tens"
    if word == "hundred":
        return "hundred"
    return "scale" if word in SCALES else None


def _follows(last: str | None, kind: str) -> bool:
    """Whether a number word of ``kind`` continues a number whose previous word was of kind ``last``."""
    if last is None:
        return kind not in ("hundred", "scale")  # "hundred" alone is a word, not a number
    allowed = {  # kind -> kinds it may follow
        "unit": ("tens", "hundred", "scale"),
        "teen": ("hundred", "scale"),
        "tens": ("hundred", "scale"),
        "hundred": ("unit", "teen"),
        "scale": ("unit", "teen", "tens", "hundred"),
    }
    return last in allowed[kind]


def contains(reply_words: Sequence[str], answer_words: Sequence[str]) -> bool:
    """Whether ``answer_words`` occur consecutively in ``reply_words`` (False for an empty answer)."""
    n = len(answer_words)
    if n == 0:
        return False
    return any(list(reply_words[i:i + n]) == list(answer_words) for i in range(len(reply_words) - n + 1))


def is_correct(reply: str, answers: Sequence[str]) -> bool:
    words = normalize(reply)
    return any(contains(words, normalize(answer)) for answer in answers)


def gold_answers(extra: dict) -> list[str]:
    """A sample's gold answers: JSON ``answers`` (a list of strings) or ``answer`` (one string)."""
    answers = extra.get("answers")
    if isinstance(answers, list):
        return [a for a in answers if isinstance(a, str)]
    answer = extra.get("answer")
    return [answer] if isinstance(answer, str) and answer else []


def spokenqa_metrics(records: Sequence[dict], bootstrap: Bootstrap) -> dict:
    """Accuracy with its interval, overall and per corpus, from records with ``correct`` and ``corpus``."""
    correct = [float(r["correct"]) for r in records]
    corpora = [r.get("corpus") or "unknown" for r in records]
    per_corpus = {}
    for name in sorted(set(corpora)):
        values = [c for c, k in zip(correct, corpora) if k == name]
        per_corpus[name] = {"items": len(values), "accuracy": bootstrap.mean(values).as_dict()}
    return {
        "items": len(records), "correct": int(sum(correct)), "accuracy": bootstrap.mean(correct).as_dict(),
        "corpora": per_corpus,
        "empty_gold": sum(1 for r in records if not any(normalize(a) for a in r.get("answers", []))),
    }


def spokenqa_table(result: dict) -> str:
    rows = [(name, r["items"], percent(r["accuracy"])) for name, r in result["corpora"].items()]
    rows.append(("all", result["items"], percent(result["accuracy"])))
    return markdown_table(("corpus", "items", f"accuracy % [{confidence_label(result['accuracy'])} CI]"), rows)


class SpokenQATask:
    """Spoken questions with gold ``answers``: the model replies to the speech; the reply is scored by containment."""

    name = "spokenqa"

    def __init__(self, cfg: Config, model, tokenizer, synced: bool):
        self.cfg, self.tokenizer, self.synced = cfg, tokenizer, synced
        self.prompt = SpokenPrompt(cfg, speech_llm(model), tokenizer)
        self.replier = Replier(cfg, speech_llm(model), tokenizer, synced)

    def build(self, raw: RawSample) -> Example:
        meta = read_meta(raw)
        answers = gold_answers(meta.extra)
        if not answers:
            raise SampleError("missing_field:answers")
        return self.prompt.example(raw, meta, {"answers": answers, "corpus": meta.corpus or "unknown"})

    def score(self, model, batch: dict) -> list[dict]:
        replies = self.replier(speech_llm(model), batch)
        return [{"key": key, "corpus": batch["corpus"][row], "reply": replies[row], "answers": batch["answers"][row],
                 "correct": is_correct(replies[row], batch["answers"][row])} for row, key in real_rows(batch)]

    def summarize(self, records: list[dict]) -> tuple[dict, str]:
        result = spokenqa_metrics(records, bootstrap_of(self.cfg))
        return result, spokenqa_table(result)

    def scalars(self, result: dict) -> dict[str, float]:
        return {"accuracy": result["accuracy"]["value"]}
