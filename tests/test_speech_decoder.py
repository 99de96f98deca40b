"""The speech decoder, its input fusion and streaming generation, on tiny random models in one process."""

from __future__ import annotations

import pytest
import torch

from fe_train.data.interleave import collate_unit_sequences, unit_sequence
from fe_train.data.prompt import IGNORE
from fe_train.errors import UserError
from fe_train.fixtures import tiny
from fe_train.fixtures.unit_assets import build_decoder
from fe_train.model.freezeempath import FreezeEmpath
from fe_train.model.freezing import set_trainable
from fe_train.model.fusion import GatedFusion, ffn_projection, linear_projection, paired_states
from fe_train.model.speech_decoder import LoraSettings, SpeechDecoder
from fe_train.model.spoken_reply import SpokenReply
from fe_train.model.streaming import UnitWriter, forced_pairs, generated_pairs, stream

N_UNITS = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoder")
    tokenizer = tiny.build_tokenizer(["what colour is the sky", "the sky is blue .", "the grass is green ."], root / "llm")
    llm = tiny.build_llm(tokenizer, hidden=32)
    llm.requires_grad_(False).eval()
    build_decoder(tokenizer, hidden=32, seed=1).save_pretrained(root / "decoder")
    return root, tokenizer, llm


def spoken_reply(world, lora=None, fusion="linear", seed=0) -> SpokenReply:
    root, tokenizer, llm = world
    torch.manual_seed(seed)
    decoder = SpeechDecoder.from_pretrained(str(root / "decoder"), N_UNITS, len(tokenizer), torch.float32, lora)
    projection = {"linear": linear_projection, "ffn": ffn_projection}[fusion](llm.config.hidden_size, decoder.hidden_size, 0)
    return SpokenReply(FreezeEmpath(llm), decoder, GatedFusion(projection, decoder.hidden_size))


def test_vocabulary_is_extended_by_sep_and_units(world):
    root, tokenizer, _ = world
    model = spoken_reply(world)
    vocab = model.decoder.vocab
    assert vocab.text_size == len(tokenizer) and vocab.sep_id == len(tokenizer)
    assert vocab.unit_tokens([0, N_UNITS - 1]) == [len(tokenizer) + 1, len(tokenizer) + N_UNITS]
    assert vocab.eos_id == tokenizer.pad_token_id == model.decoder.lm.config.pad_token_id
    lm = model.decoder.lm
    assert lm.get_input_embeddings().num_embeddings == vocab.size == lm.config.vocab_size
    assert lm.get_output_embeddings().weight.shape[0] == vocab.size
    with pytest.raises(UserError, match="do not cover the LLM tokenizer"):
        SpeechDecoder.from_pretrained(str(root / "decoder"), N_UNITS, len(tokenizer) + 1, torch.float32)


def test_export_reloads_without_extending_again(world, tmp_path):
    root, tokenizer, _ = world
    decoder = spoken_reply(world).decoder
    decoder.save_pretrained(tmp_path / "export", decoder.state_dict())
    again = SpeechDecoder.from_pretrained(str(tmp_path / "export"), N_UNITS, len(tokenizer), torch.float32)
    assert again.vocab == decoder.vocab
    ids = torch.tensor([[3, decoder.vocab.sep_id, decoder.vocab.unit_offset + 5]])
    assert torch.equal(again.lm(input_ids=ids).logits, decoder.lm(input_ids=ids).logits)
    with pytest.raises(UserError, match="trained with 12 units"):
        SpeechDecoder.from_pretrained(str(tmp_path / "export"), N_UNITS + 1, len(tokenizer), torch.float32)


def test_gated_fusion_mixes_projection_and_embedding():
    fusion = GatedFusion(linear_projection(6, 4, 0), 4)
    states, embeds = torch.randn(2, 3, 6), torch.randn(2, 3, 4)
    rep = fusion.projection(states)
    gate = torch.sigmoid(fusion.gate(torch.cat([rep, embeds], dim=-1)))
    assert torch.allclose(fusion(states, embeds), gate * rep + (1 - gate) * embeds)
    ffn = ffn_projection(6, 4, 0)
    assert ffn[0].out_features == 12 and ffn[2].out_features == 4
    positions = torch.tensor([[2, -1, 0]])
    paired = paired_states(states[:1], positions)
    assert torch.equal(paired[0, 0], states[0, 2]) and torch.equal(paired[0, 2], states[0, 0])


def test_text_positions_pair_the_state_that_predicted_the_token(world):
    model = spoken_reply(world, fusion="ffn")
    vocab = model.decoder.vocab
    states = torch.randn(1, 10, model.speech_llm.llm.config.hidden_size)
    row = unit_sequence([7, 8], [5, 6], vocab.unit_tokens([1, 2, 3]), vocab.sep_id, vocab.eos_id, 2, 2, 100)
    batch = collate_unit_sequences([row], [False])
    inputs = model.decoder_inputs(states, batch["unit_input_ids"], batch["unit_llm_positions"])
    embed = model.decoder.embed
    assert torch.allclose(inputs[0, 0], model.fusion(states[0, 4], embed(torch.tensor(7))))  # token at 5 <- state at 4
    assert torch.allclose(inputs[0, 1], model.fusion(states[0, 5], embed(torch.tensor(8))))
    assert torch.equal(inputs[0, 2], embed(torch.tensor(vocab.unit_offset + 1)))  # units enter as their embeddings
    assert row.input_ids[4] == vocab.sep_id and torch.equal(inputs[0, 4], embed(torch.tensor(vocab.sep_id)))


def test_training_step_reaches_decoder_and_fusion_only(world):
    _, tokenizer, llm = world
    model = spoken_reply(world)
    counts = set_trainable(model, ("decoder", "fusion"))
    assert counts.trainable == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("speech_llm."))
    calls = []
    for module in llm.modules():
        module.register_full_backward_hook(lambda *args: calls.append(1))
    batch = tiny_batch(model, tokenizer)
    out = model(batch)
    out["loss"].backward()
    assert out["n_tokens"] == 5 and calls == []  # 4 units + eos; no backward through the LLM
    assert all(p.grad is None for p in llm.parameters())
    assert all(p.grad is not None for p in model.fusion.parameters())
    assert model.decoder.lm.get_input_embeddings().weight.grad is not None


def tiny_batch(model: SpokenReply, tokenizer) -> dict:
    vocab = model.decoder.vocab
    prompt = tokenizer("what colour is the sky", add_special_tokens=False)["input_ids"]
    reply = tokenizer("the sky is blue .", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt + reply])
    positions = list(range(len(prompt), len(prompt) + len(reply)))
    row = unit_sequence(reply, positions, vocab.unit_tokens([1, 2, 3, 4]), vocab.sep_id, vocab.eos_id, 3, 15, 100)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **collate_unit_sequences([row], [False]),
            "reply": reply, "reply_start": len(prompt)}


@pytest.mark.parametrize("read,write", [(2, 3), (3, 15)])
def test_streaming_writes_what_teacher_forcing_predicts(world, read, write):
    """Stream a reply through a random decoder, then teacher-force the units it wrote: the same argmax everywhere."""
    _, tokenizer, _ = world
    model = spoken_reply(world, seed=3).eval()
    vocab = model.decoder.vocab
    batch = tiny_batch(model, tokenizer)
    states = model.llm_states(batch)[0]  # (T, D_llm)
    writer = UnitWriter(model.decoder, model.fusion, read, write, max_new_units=20)
    out = stream(writer, forced_pairs(states, batch["reply"], batch["reply_start"]))
    n_reply = len(batch["reply"])
    assert out.reply_ids == batch["reply"]
    assert out.writes[:-1] == [(read * (i + 1), write * (i + 1)) for i in range(n_reply // read)]
    assert out.writes[-1] == (n_reply, len(out.units)) and len(out.units) >= write * (n_reply // read)

    positions = list(range(batch["reply_start"], batch["reply_start"] + n_reply))
    row = unit_sequence(batch["reply"], positions, vocab.unit_tokens(out.units), vocab.sep_id, vocab.eos_id,
                        read, write, 1000)
    rows = collate_unit_sequences([row], [False])
    with torch.no_grad():
        embeds = model.decoder_inputs(states[None], rows["unit_input_ids"], rows["unit_llm_positions"])
        logits = model.decoder.lm(inputs_embeds=embeds).logits[0]  # (S, V)
    labels = rows["unit_labels"][0]
    sep_at = row.input_ids.index(vocab.sep_id)
    checked = (labels != IGNORE).nonzero().squeeze(1).tolist()
    if not out.ended:
        checked = checked[:-1]  # stopped at max_new_units: the row's final eos was never chosen
    assert len(checked) >= len(out.units)
    units_only = torch.arange(vocab.unit_offset, vocab.size)
    with_eos = torch.cat([units_only, torch.tensor([vocab.eos_id])])
    for p in checked:
        allowed = with_eos if p > sep_at else units_only
        assert int(allowed[logits[p - 1, allowed].argmax()]) == labels[p], p


def test_lora_trains_adapters_and_new_rows_and_reloads_with_peft(world, tmp_path):
    from peft import PeftModel

    root, tokenizer, _ = world
    lora = LoraSettings(rank=4, alpha=8, dropout=0.0, targets=("q_proj", "v_proj"), modules_to_save=("embed_tokens", "lm_head"))
    model = spoken_reply(world, lora=lora)
    set_trainable(model, ("decoder", "fusion"))
    trainable = {n for n, p in model.decoder.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "modules_to_save" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = tiny_batch(model, tokenizer)
    for _ in range(3):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    decoder = model.decoder
    decoder.save_pretrained(tmp_path / "lora", decoder.state_dict())
    assert (tmp_path / "lora" / "adapter_config.json").is_file() and (tmp_path / "lora" / "unit_vocab.json").is_file()

    torch.manual_seed(123)  # a different random init of the new rows: the adapter must carry the trained ones
    base = SpeechDecoder.from_pretrained(str(root / "decoder"), N_UNITS, len(tokenizer), torch.float32).lm
    reloaded = PeftModel.from_pretrained(base, str(tmp_path / "lora"))
    ids = torch.tensor([[3, decoder.vocab.sep_id, decoder.vocab.unit_offset + 5]])
    merged = SpeechDecoder.from_pretrained(str(tmp_path / "lora"), N_UNITS, len(tokenizer), torch.float32)  # stage 3b's start
    embeds = torch.randn(1, 4, decoder.hidden_size)
    with torch.no_grad():
        trained = decoder.lm(input_ids=ids).logits
        assert torch.allclose(reloaded(input_ids=ids).logits, trained, atol=1e-6)
        assert torch.allclose(reloaded(inputs_embeds=embeds).logits, decoder.lm(inputs_embeds=embeds).logits, atol=1e-6)
        assert torch.allclose(merged.lm(input_ids=ids).logits, trained, atol=1e-5)
    assert merged.vocab == decoder.vocab and merged.lora_trainable is None


def test_generated_reply_pairs_match_generate_and_teacher_forcing(world):
    """The LLM's greedy reply with a KV cache: the tokens of ``generate``, and at each token the state
    that a teacher-forced pass over prompt + reply has one position earlier (the training pairing)."""
    _, tokenizer, llm = world
    prompt = torch.tensor([tokenizer("what colour is the sky", add_special_tokens=False)["input_ids"]])
    embeds = llm.get_input_embeddings()(prompt)  # (1, T, D)
    pairs = list(generated_pairs(llm, embeds, turn_end_id=-1, max_tokens=6))
    tokens = [token for _, token in pairs]
    expected = llm.generate(inputs_embeds=embeds, max_new_tokens=6, do_sample=False, min_new_tokens=6,
                            attention_mask=torch.ones_like(prompt), pad_token_id=tokenizer.pad_token_id)
    assert tokens == expected[0, -6:].tolist()
    full = torch.cat([prompt, torch.tensor([tokens])], dim=1)
    with torch.no_grad():
        states = llm(input_ids=full, output_hidden_states=True).hidden_states[-1][0]  # (T + 6, D)
    for i, (state, _) in enumerate(pairs):
        assert torch.allclose(state, states[prompt.shape[1] + i - 1], atol=1e-5), i


def test_sampled_units_follow_the_generator(world):
    _, tokenizer, _ = world
    model = spoken_reply(world, seed=3).eval()
    batch = tiny_batch(model, tokenizer)
    states = model.llm_states(batch)[0]

    def sample(seed, temperature, top_k=0):
        writer = UnitWriter(model.decoder, model.fusion, 3, 15, 20, temperature, torch.Generator().manual_seed(seed), top_k)
        return stream(writer, forced_pairs(states, batch["reply"], batch["reply_start"])).units

    assert sample(0, 1.0) == sample(0, 1.0) != sample(1, 1.0)
    assert all(0 <= u < N_UNITS for u in sample(2, 1.0))
    greedy = sample(0, 0.0)
    assert sample(5, 1.0, top_k=1) == sample(6, 100.0, top_k=1) == greedy  # top-1 sampling is the greedy choice
    writer = UnitWriter(model.decoder, model.fusion, 3, 15, 20, 100.0, torch.Generator().manual_seed(0), top_k=2)
    chosen = {writer._choose(torch.tensor([0.0, 5.0, 3.0, 1.0])) for _ in range(200)}
    assert chosen == {1, 2}  # the two likeliest, both drawn at a high temperature


def test_flops_count_the_decoder_and_a_forward_only_llm(world):
    from fe_train.tracking.flops import FlopCounter

    _, tokenizer, llm = world
    model = spoken_reply(world)
    set_trainable(model, ("decoder", "fusion"))
    counter = FlopCounter.for_model(model, llm_backward=False)
    lm = model.decoder.lm
    tied = lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    decoder_embed = 0 if tied else lm.get_input_embeddings().weight.numel()  # lookups only: no matmul
    decoder_all = sum(p.numel() for p in model.decoder.parameters()) + sum(p.numel() for p in model.fusion.parameters())
    assert counter.trainable_params == 0 and counter.decoder_trainable_params == decoder_all
    assert counter.decoder_params == decoder_all - decoder_embed
    batch = tiny_batch(model, tokenizer)
    batch.update(labels=torch.full_like(batch["input_ids"], 7), slots=torch.zeros_like(batch["input_ids"]))
    positions = int(batch["unit_attention_mask"].sum())
    llm_tokens = int(batch["attention_mask"].sum())
    # LLM forward only, its head once per row (labels or not); decoder forward + input gradients over its
    # matmuls, weight gradients over all it trains
    expected = 2 * (counter.llm_body_params * llm_tokens + counter.llm_head_params)
    expected += (4 * (decoder_all - decoder_embed) + 2 * decoder_all) * positions
    assert counter.micro_batch(batch) == pytest.approx(expected)
