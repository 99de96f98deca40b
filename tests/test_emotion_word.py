"""``fe-train eval-ser`` and ``fe-train eval ser`` read a reply's label the same way."""

from __future__ import annotations

from fe_train.config import EMOTIONS
from fe_train.eval import emotion_word, ser, ser_score

REPLIES = {
    "angry": "angry", "Angry.": "angry", "i feel sad": "sad", "happy! no, sad": "happy", "": None, "joyful": None,
    "anger": "angry", "The cat has four legs.": None, "SADNESS...": "sad", "surprise, surprise: neutral": "surprised",
    "I'm not angry": "angry", "Neutral": "neutral", "saddle": None, "the speaker sounds Happy": "happy",
}


def test_both_ser_evaluations_read_every_reply_to_the_same_label():
    # The names each path calls when it reads a reply: eval-ser (stage evaluation) and eval ser (eval task).
    stage_path, eval_path = ser_score.label_word, ser.label_word
    stage_labels = {reply: stage_path(reply) for reply in REPLIES}
    eval_labels = {reply: eval_path(reply) for reply in REPLIES}
    assert stage_labels == eval_labels == REPLIES
    assert stage_path is eval_path is emotion_word.label_word  # one reader


def test_every_label_word_names_a_class_and_every_class_has_its_word():
    assert set(emotion_word.WORDS.values()) == set(EMOTIONS)
    assert all(emotion_word.WORDS[name] == name for name in EMOTIONS)
