"""replace_attention: FrustratedAttention in Llama, Mistral, Qwen2 and GPT-2 decoders trains,
and generate() with the cache gives the tokens of generate() without it and of full forwards."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed (pip install -e '.[hf]')")

from fsn_model.attention import FrustratedAttention  # noqa: E402
from fsn_model.hf import FrustratedSelfAttention, replace_attention  # noqa: E402

VOCAB = 48
LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, eos_token_id=None)  # no early stop


def build(arch: str):
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      bos_token_id=0, eos_token_id=None)
        return transformers.GPT2LMHeadModel(cfg)
    cls = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}[arch]
    extra = {"sliding_window": 4} if arch == "mistral" else {}  # shorter than the test sequences
    cfg = getattr(transformers, f"{cls}Config")(**LLAMA_LIKE, **extra)
    return getattr(transformers, f"{cls}ForCausalLM")(cfg)


@pytest.fixture(scope="module", params=[(arch, projections) for projections in (False, True)
                                        for arch in ("llama", "mistral", "qwen2", "gpt2")],
                ids=lambda p: p[0] + ("-projections" if p[1] else ""))
def swapped(request):
    """(arch, model with its attention swapped, with or without the projections, and
    trained a few steps, losses)."""
    arch, projections = request.param
    model = replace_attention(build(arch), n_harmonics=2, projections=projections)
    model.train()
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return arch, model.eval(), losses


def test_every_self_attention_is_replaced(swapped):
    arch, model, _ = swapped
    layers = [m for m in model.modules() if isinstance(m, FrustratedSelfAttention)]
    assert len(layers) == 2 and [m.layer_idx for m in layers] == [0, 1]
    names = {type(m).__name__ for m in model.modules()}
    assert not names & {"LlamaAttention", "MistralAttention", "Qwen2Attention", "GPT2Attention"}


def test_the_swapped_model_trains(swapped):
    arch, model, losses = swapped
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses
    attn = next(m for m in model.modules() if isinstance(m, FrustratedAttention))
    assert attn.coupling_real.grad is not None and attn.coupling_real.grad.abs().sum() > 0


def test_generate_with_the_cache_gives_the_tokens_of_full_forwards(swapped, monkeypatch):
    arch, model, _ = swapped
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(prompt)
    n = 7
    decodes = []
    real_decode = FrustratedAttention.decode
    monkeypatch.setattr(FrustratedAttention, "decode", lambda self, *a, **k: decodes.append(1) or real_decode(
        self, *a, **k))
    cached = model.generate(prompt, attention_mask=mask, max_new_tokens=n, do_sample=False, use_cache=True)
    assert len(decodes) == 2 * (n - 1)  # each new token after the first: one decode step per layer
    uncached = model.generate(prompt, attention_mask=mask, max_new_tokens=n, do_sample=False, use_cache=False)
    ids = prompt
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, ids) and torch.equal(uncached, ids)


def test_a_chunk_after_a_cached_prefix_equals_the_full_forward(swapped):
    arch, model, _ = swapped
    ids = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        first = model(ids[:, :6], use_cache=True)
        cache = first.cache if hasattr(first, "cache") else first.past_key_values
        rest = model(ids[:, 6:], use_cache=True, **{"cache" if hasattr(first, "cache") else "past_key_values": cache})
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5, rtol=0)


def test_padding_is_refused(swapped):
    arch, model, _ = swapped
    ids = torch.randint(0, VOCAB, (2, 4))
    mask = torch.ones_like(ids)
    mask[0, 0] = 0
    with pytest.raises(ValueError, match="padding"):
        model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match="padding"):
        model.generate(ids, attention_mask=mask, max_new_tokens=2)
    for bad, words in ((torch.tensor([1, 0, 1, 1]), "must be 2-D"), (torch.full((2, 4), 0.5), "0s and 1s")):
        with pytest.raises(ValueError, match=words):
            model(ids, attention_mask=bad)


def test_unknown_architectures_and_arguments_are_refused():
    opt = transformers.OPTForCausalLM(transformers.OPTConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                                                             ffn_dim=16, num_attention_heads=2,
                                                             word_embed_proj_dim=16))
    with pytest.raises(ValueError, match="'opt'"):
        replace_attention(opt)
    with pytest.raises(ValueError, match="model_type None"):
        replace_attention(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="harmonics"):
        replace_attention(build("llama"), harmonics=3)
    model = replace_attention(build("llama"))
    with pytest.raises(ValueError, match="already replaced"):
        replace_attention(model)


def test_the_projections_are_built_and_trained(swapped):
    arch, model, _ = swapped
    attn = next(m for m in model.modules() if isinstance(m, FrustratedAttention))
    if attn.projections:
        assert attn.in_proj is not None and attn.out_proj is not None
        eye = torch.eye(attn.dim)
        assert not torch.equal(attn.out_proj.weight.detach(), eye)  # moved from the identity by training


def test_the_projection_options_reach_the_layer():
    model = replace_attention(build("llama"), projections=True, projected_heads=2, project_output=False)
    attn = next(m for m in model.modules() if isinstance(m, FrustratedAttention))
    assert (attn.projected_heads, attn.out_proj) == (2, None)
    with pytest.raises(ValueError, match="projections"):
        replace_attention(build("llama"), projections=False, projected_heads=2)


def test_the_projections_are_on_by_default():
    """The default the trial in huggingface.md chose."""
    model = replace_attention(build("llama"))
    attn = next(m for m in model.modules() if isinstance(m, FrustratedAttention))
    assert attn.projections and attn.in_proj is not None and attn.out_proj is not None


def test_a_qwen2_built_with_a_sliding_window_runs_without_one():
    """Qwen2 decides at build time that some layers slide (use_sliding_window): after the
    swap every layer attends to the whole past, and forward and cached generation work."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(**LLAMA_LIKE, use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert "sliding_attention" in cfg.layer_types
    model = replace_attention(transformers.Qwen2ForCausalLM(cfg)).eval()
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
    cached = model.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(cached, model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False))
