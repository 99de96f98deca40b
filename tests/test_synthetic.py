"""``synthetic.speak_each``: several espeak-ng processes at once give the speech of one ``speak`` after another, in
order, reading a bounded number of items ahead."""

from __future__ import annotations

import numpy as np
import pytest

from fe_train.data import synthetic

pytestmark = pytest.mark.usefixtures("espeak_ng")
TEXTS = ("what sound does the owl make", "hello", "the cat says meow .", "where does the duck live", "count to three")


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_speak_each_equals_one_speak_after_another_in_order(workers):
    items = [(n, text, voice) for n, (text, voice) in enumerate(zip(TEXTS * 3, synthetic.VOICES * 2))]
    got = list(synthetic.speak_each(items, 22050, workers=workers))
    assert [tag for tag, _ in got] == list(range(len(items)))
    for (_, text, voice), (_, wave) in zip(items, got):
        assert np.array_equal(wave, synthetic.speak(text, voice, 22050)), (text, voice)


def test_speak_each_reads_at_most_four_items_per_worker_ahead():
    pulled = []

    def items():
        for n in range(40):
            pulled.append(n)
            yield n, TEXTS[n % len(TEXTS)], synthetic.VOICES[0]

    stream = synthetic.speak_each(items(), workers=2)
    assert next(stream)[0] == 0 and len(pulled) == 8
    assert [tag for tag, _ in stream] == list(range(1, 40)) and len(pulled) == 40
