import pytest
import torch

from core import lm
from stages import tokenizer as tokenizer_stage


@pytest.fixture(scope="module")
def tok():
    texts = ["The review is positive.", "The review is negative.", "I bought this kettle last week."] * 50
    return tokenizer_stage.build(texts, tokenizer_stage.Config(vocab_size=300))


def test_chat_template_and_special_tokens(tok):
    msgs = [{"role": "user", "content": "Is it good?"}]
    prompt = lm.prompt_text(tok, msgs)
    assert prompt == "<|user|>\nIs it good?<|end|><|assistant|>\n"
    full = lm.conversation_text(tok, msgs, "positive")
    assert full.startswith(prompt) and full.endswith("positive<|end|>")
    ids = tok(full, add_special_tokens=False)["input_ids"]
    for special in ("<|user|>", "<|assistant|>", "<|end|>"):
        assert tok.convert_tokens_to_ids(special) in ids
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"


def test_vocab_smaller_than_special_tokens_is_refused_by_the_config(tok):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="100 is smaller than the 256 byte symbols"):
        tokenizer_stage.Config(vocab_size=100)


def test_bytes_per_token_counts_each_documents_separator(tok):
    """One definition, as pack and the token files lay text out: a document's tokens and its separator. The
    tokenizer stage's compression figure and every bits-per-byte use it."""
    texts = ["I bought this kettle last week.", "The review is positive."]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    n_bytes = len(texts[0].encode()) + len(texts[1].encode())
    assert lm.bytes_per_token(tok, texts) == n_bytes / (len(ids[0]) + len(ids[1]) + 2)
    # the tokenizer stage takes it from core.lm (inside run(): the stage module stays free of torch) and has none
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(tokenizer_stage))
    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "core.lm"
                for a in node.names]
    defined = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    assert "bytes_per_token" in imported and "bytes_per_token" not in defined


def test_tokenizer_identity_is_the_vocabulary_not_its_size(tok, tmp_path):
    """A tokenizer of the same size trained on other text is another tokenizer: refused, not used."""
    from core.errors import InputError

    other = tokenizer_stage.build(["Die Bewertung ist positiv.", "Ich kaufte diesen Kessel."] * 50,
                                  tokenizer_stage.Config(vocab_size=300))
    assert len(other) == len(tok) and not lm.same_tokenizer(tok, other)
    assert lm.same_tokenizer(tok, tok)
    other.save_pretrained(tmp_path)
    with pytest.raises(InputError, match="tokenizer .* differs"):
        lm.require_same_tokenizer(tok, tmp_path, "reward model")


def test_pack_separates_documents(tok):
    blocks = lm.pack(tok, ["I bought this kettle last week."] * 10, seq_len=8)
    sep = tok.convert_tokens_to_ids(lm.DOC_SEP)
    assert blocks.shape[1] == 8 and (blocks == sep).sum() >= 1
    with pytest.raises(Exception, match="fewer than one block"):
        lm.pack(tok, ["hi"], seq_len=512)


def test_generation_is_deterministic_and_stops_at_eos(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    prompts = [[{"role": "user", "content": "Is it good?"}], [{"role": "user", "content": "I bought this kettle."}]]
    a = lm.generate(model, tok, prompts, max_new_tokens=5)
    assert a == lm.generate(model, tok, prompts, max_new_tokens=5)
    # greedy decoding with our KV-cached loop matches transformers' generate
    enc = tok([lm.prompt_text(tok, p) for p in prompts], return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=False)
    ref = model.generate(**enc, max_new_tokens=5, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    ours = lm.sample_tokens(model, enc["input_ids"], enc["attention_mask"], 5, tok.eos_token_id, do_sample=False)
    n = min(ref.shape[1], ours.shape[1])
    assert torch.equal(ref[:, :n], ours[:, :n])


def test_kl_of_a_model_to_itself_is_zero(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                         pad_token_id=tok.pad_token_id))
    prompts = [[{"role": "user", "content": "Is it good?"}]] * 2
    kl = lm.answer_kl(model, model, tok, prompts, ["positive", "The review is negative."])
    assert all(abs(k) < 1e-5 for k in kl)
    other = LlamaForCausalLM(model.config)
    assert all(k > 0 for k in lm.answer_kl(model, other, tok, prompts, ["positive", "The review is negative."]))


def test_sampled_kl_is_zero_to_itself_positive_to_another_and_seeded(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id)
    model, other = LlamaForCausalLM(config), LlamaForCausalLM(config)
    prompts = [[{"role": "user", "content": "Is it good?"}], [{"role": "user", "content": "Is it bad?"}]]
    same = lm.sampled_kl(model, model, tok, prompts, samples=3, max_new_tokens=4)
    assert len(same) == 2 and all(abs(k) < 1e-5 for k in same)
    kl = lm.sampled_kl(model, other, tok, prompts, samples=3, max_new_tokens=4, seed=1)
    assert all(k > 0 for k in kl)
    assert kl == lm.sampled_kl(model, other, tok, prompts, samples=3, max_new_tokens=4, seed=1)
    # sampled answers, not the greedy one: another seed gives another estimate
    assert kl != lm.sampled_kl(model, other, tok, prompts, samples=3, max_new_tokens=4, seed=2)
