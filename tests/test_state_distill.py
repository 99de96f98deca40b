"""Stage 1's hidden-state distillation (``train.state_distill``): which positions of the speech row and of the
transcript row it compares, whatever the rows' lengths and padding."""

from __future__ import annotations

import pytest
import torch

from fe_train.data.collate import Collate
from fe_train.data.pipeline import Example
from fe_train.data.prompt import PromptLayout
from fe_train.data.user_turn import UserTurn
from fe_train.fixtures import tiny
from fe_train.model.freezeempath import SPEECH_SLOT, FreezeEmpath
from fe_train.model.next_token_loss import next_token_loss
from fe_train.stages.align import transcript_fields

QUESTIONS = {"what colour is the sky": "the sky is blue .",
             "what colour is the grass in the big field today": "the grass is green ."}
SYSTEM = "You are a helpful assistant."


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    tokenizer = tiny.build_tokenizer([*QUESTIONS, *QUESTIONS.values(), SYSTEM], tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    return PromptLayout(tokenizer, SYSTEM, max_reply_tokens=16), FreezeEmpath(tiny.build_llm(tokenizer).eval(), state_weight=1.0)


def rows(layout: PromptLayout, said: list[str], meant: list[str]):
    """A collated batch whose speech slot in row i is as long as ``said[i]``'s words in its transcript row, the
    reply ``meant[i]``'s; and those words' token ids, to put in the slot."""
    turn = UserTurn("<speech>", "transcript")
    examples, contents = [], []
    for key, (heard, question) in enumerate(zip(said, meant)):
        spoken = layout.build(turn.render(str(key), heard, None), {}, QUESTIONS[question]).input_ids
        start = layout.build("<speech>", {"<speech>": 1}, None).slots.index(SPEECH_SLOT)
        fields = transcript_fields(layout, layout.build("<speech>", {"<speech>": 1}, QUESTIONS[question]),
                                   turn.render(str(key), heard, None), QUESTIONS[question])
        content = spoken[start: len(spoken) - fields["state_span"]]
        speech = layout.build("<speech>", {"<speech>": len(content)}, QUESTIONS[question])
        fields = {"layout": speech, **transcript_fields(layout, speech, turn.render(str(key), question, None),
                                                          QUESTIONS[question])}
        teacher = fields["teacher_layout"].input_ids
        span = fields["state_span"]
        assert speech.input_ids[:start] == teacher[:start] and speech.input_ids[-span:] == teacher[-span:]
        examples.append(Example(str(key), fields))
        contents.append(content)
    return Collate(layout.pad_id)(examples), contents


def distances(model: FreezeEmpath, batch: dict, contents: list[list[int]]) -> tuple[float, list[float]]:
    """The batched term, and each row's own by hand (alone, unpadded: the last ``state_span`` positions of both)."""
    embed = model.llm.get_input_embeddings()
    embeds = embed(batch["input_ids"]).detach().clone()
    for row, content in enumerate(contents):
        embeds[row, batch["slots"][row] == SPEECH_SLOT] = embed(torch.tensor(content)).detach()
    with torch.no_grad():
        states = next_token_loss(model.llm, embeds, batch["attention_mask"], batch["labels"], states=True)["states"]
        batched = float(model.state_distance(states, batch))
        alone = []
        for row in range(len(contents)):
            n_s, n_t = int(batch["attention_mask"][row].sum()), int(batch["teacher_attention_mask"][row].sum())
            span = int(batch["state_span"][row])
            s = model.llm(inputs_embeds=embeds[row:row + 1, :n_s], output_hidden_states=True).hidden_states[1:]
            t = model.llm(input_ids=batch["teacher_input_ids"][row:row + 1, :n_t], output_hidden_states=True).hidden_states[1:]
            alone.append(sum(float((1 - torch.cosine_similarity(a[0, -span:], b[0, -span:], dim=-1)).sum())
                             for a, b in zip(s, t)) / len(s))
    return batched, alone


def test_the_speech_row_that_carries_the_transcript_is_at_distance_zero(parts):
    layout, model = parts
    short, long = QUESTIONS
    batch, contents = rows(layout, [short, long], [short, long])  # rows of different lengths: padding differs
    assert batch["input_ids"].shape[1] != int(batch["attention_mask"][0].sum())
    batched, alone = distances(model, batch, contents)
    assert alone == pytest.approx([0.0, 0.0], abs=1e-5) and batched == pytest.approx(0.0, abs=1e-5)
    span = batch["state_span"].tolist()  # the user turn's end, the assistant's header, the reply and its turn end
    reply_ids = [len(layout.tokenizer(QUESTIONS[q], add_special_tokens=False)["input_ids"]) + 1 for q in QUESTIONS]
    assert all(n > r for n, r in zip(span, reply_ids))
    assert model.loss_counts(batch).tolist()[-1] == sum(span)


def test_a_speech_row_that_says_another_question_is_far_and_each_row_is_compared_with_its_own(parts):
    layout, model = parts
    short, long = QUESTIONS
    batch, contents = rows(layout, [long, short, short], [short, short, long])
    batched, alone = distances(model, batch, contents)
    assert alone[1] == pytest.approx(0.0, abs=1e-5)
    assert alone[0] > 0.05 and alone[2] > 0.05
    assert batched == pytest.approx(sum(alone), rel=1e-4)
    batch["weight"][0] = 0.0  # a padding copy counts for nothing
    assert distances(model, batch, contents)[0] == pytest.approx(sum(alone[1:]), rel=1e-4)
    assert model.loss_counts(batch).tolist()[-1] == float(batch["state_span"][1:].sum())


def test_the_memory_plan_counts_what_the_term_keeps(parts):
    """``fe-train plan`` counts the term as the transcript row's every-layer states (L + 1 of them, s positions) and
    the cosine's three fp32 tensors of the compared positions per layer kept for the backward (12 L s h bytes, s
    bounding them):
    measured here on the tensors the term really creates and saves."""
    from fe_train.engine.memory import Workload, activation_bytes

    layout, model = parts
    short, long = QUESTIONS
    batch, contents = rows(layout, [short, long], [long, short])
    embeds = model.llm.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
    states = next_token_loss(model.llm, embeds, batch["attention_mask"], batch["labels"], states=True)["states"]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        model.state_distance(states, batch).backward()
    config = model.llm.config
    layers, hidden = config.num_hidden_layers, config.hidden_size
    compared = int(batch["state_span"].sum())
    kept = sum(t.numel() * t.element_size() for t in saved if t.is_floating_point() and t.shape[-1] == hidden)
    assert kept == 12 * layers * compared * hidden  # the cosine's three fp32 tensors of the compared positions, per layer
    with torch.no_grad():
        teacher = model.llm(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"],
                            output_hidden_states=True).hidden_states
    assert len(teacher) == layers + 1 and teacher[0].shape[1] <= batch["input_ids"].shape[1]
    shape = dict(llm_params=1, llm_layers=layers, llm_hidden=hidden, llm_heads=config.num_attention_heads,
                 encoder_params=0, trainable_params=0, world_size=1, micro_batch=2, seq_len=batch["input_ids"].shape[1])
    added = activation_bytes(Workload(**shape, state_distill=True)) - activation_bytes(Workload(**shape))
    s_b_h = 2 * batch["input_ids"].shape[1] * hidden
    one_layer = 34 * s_b_h + 5 * config.num_attention_heads * batch["input_ids"].shape[1] ** 2 * 2
    assert added == one_layer + 2 * (layers + 1) * s_b_h + 12 * layers * s_b_h  # states in bf16: half of fp32 here
    assert kept <= 12 * layers * s_b_h
