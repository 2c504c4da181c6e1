from core.settings import TrainSettings
from core.train_loop import lr_lambda
from stages import domain

TRAIN = {"steps": 10, "batch_size": 8, "lr": 1e-3}


def test_sequential_replay_and_joint_mixture_shares():
    seq = domain.Config(mode="sequential", replay_fraction=0.25, train=TRAIN)
    joint = domain.Config(mode="joint", domain_ratio=0.7, train=TRAIN)
    assert domain.general_share(seq) == 0.25
    assert abs(domain.general_share(joint) - 0.3) < 1e-9


def test_warmup_then_cosine_to_floor():
    f = lr_lambda(TrainSettings(steps=110, batch_size=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(10) - 1.0) < 1e-9 and abs(f(60) - 0.55) < 1e-9 and abs(f(110) - 0.1) < 1e-9


def test_wsd_holds_then_decays_linearly_to_floor():
    f = lr_lambda(TrainSettings(steps=100, batch_size=1, lr=1.0, warmup_steps=10, min_lr_ratio=0.1,
                                schedule="wsd", decay_fraction=0.2))
    assert f(0) == 0.1 and f(9) == 1.0 and f(50) == 1.0 and f(79) == 1.0
    assert abs(f(90) - 0.55) < 1e-9 and abs(f(100) - 0.1) < 1e-9


def test_flops_per_token_counts_params_and_attention():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.train_loop import device_peak_flops, flops_per_token

    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, tie_word_embeddings=True))
    n = sum(p.numel() for p in model.parameters())
    assert flops_per_token(model, 16) == 6 * n + 12 * 2 * 32 * 16
    assert device_peak_flops(torch.device("cpu"), bf16=False) > 1e8  # a measured matmul rate


def test_grad_accumulation_matches_one_big_batch():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.train_loop import train

    def run(accum):
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32))
        data = torch.randint(50, (64, 8), generator=torch.Generator().manual_seed(1))
        settings = TrainSettings(steps=3, batch_size=8, lr=1e-2, warmup_steps=0, grad_accum=accum, log_every=1,
                                 eval_every=3)
        hist = train(model, lambda step: data[(torch.arange(8) + 8 * step) % 64], {"v": data[:8]}, settings, 0)
        return [r["loss"] for r in hist if "loss" in r], next(model.parameters()).detach().clone()

    (loss1, w1), (loss4, w4) = run(1), run(4)
    assert torch.allclose(torch.tensor(loss1), torch.tensor(loss4), atol=1e-5)
    assert torch.allclose(w1, w4, atol=1e-5)


def test_token_blocks_and_the_step_seeded_shuffle(tmp_path):
    import numpy as np

    from core.tokens import Blocks, Sampler, write_meta, write_tokens

    counts = write_tokens(tmp_path, "c.train", [[1, 2, 3], [4, 5], [6, 7, 8, 9]], separator=0, vocab_size=300)
    write_meta(tmp_path, {"dtype": "uint16"})
    assert counts == {"docs": 3, "tokens": 12}
    assert np.load(tmp_path / "c.train.docs.npy").tolist() == [0, 4, 7]
    blocks = Blocks(tmp_path, "c.train", 4)
    assert len(blocks) == 3 and blocks[[2, 0]].tolist() == [[7, 8, 9, 0], [1, 2, 3, 0]]
    sampler = Sampler(n_blocks=5, batch_size=2, seed=3)
    epoch0 = np.concatenate([sampler.indices(s) for s in range(5)])
    assert sorted(epoch0[:5].tolist()) == list(range(5))  # every block once per epoch
    assert sampler.indices(3).tolist() == Sampler(5, 2, 3).indices(3).tolist()  # a pure function of the step
    assert epoch0[:5].tolist() != epoch0[5:].tolist()  # the next epoch is another order


def test_tokenizing_through_worker_processes_gives_the_same_ids(tmp_path):
    """The pool (used past POOL_MIN_CHARS) and this process encode identically and in order."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from core.tokens import encode_parallel

    texts = [f"review {i}: the lid is {'sturdy' if i % 3 else 'flimsy'} and it cost {i} pounds" for i in range(50)]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe).save_pretrained(tmp_path)
    here = list(encode_parallel(str(tmp_path), texts, workers=1))
    pooled = list(encode_parallel(str(tmp_path), texts, workers=2, chunk=7, pool_min_chars=0))
    assert len(here) == 50 and pooled == here and here[0] != here[1]
