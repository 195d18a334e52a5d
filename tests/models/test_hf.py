"""FSNForCausalLM in the Hugging Face stack: save/load, loss, masks, generate() through the
phase cache against full forwards, fsn-export, and the declared transformers floor."""
import json
import re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed (pip install -e '.[hf]')")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from fsn_model import hf  # noqa: E402
from fsn_model.attention import GATE_BIAS_INIT  # noqa: E402
from fsn_model.hf import FSNForCausalLM, FSNHFConfig, FSNPhaseCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def tiny(**overrides) -> FSNForCausalLM:
    torch.manual_seed(0)
    fields = dict(dim=16, n_layers=2, n_heads=2, hidden=24, n_harmonics=2)
    fields.update(overrides)
    return FSNForCausalLM(FSNHFConfig(**fields)).eval()


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, 256, (2, 5), generator=torch.Generator().manual_seed(1))


def greedy_by_full_forwards(model, ids, n):
    """The reference: each new token from a full forward over everything so far."""
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


def count_embedded_tokens(model):
    """A list that grows by the number of token ids each forward embeds."""
    seen = []
    model.fsn.embed.register_forward_hook(lambda mod, args, out: seen.append(args[0].numel()))
    return seen


def test_the_config_is_registered_and_checked():
    cfg = AutoConfig.for_model("fsn", dim=32, n_heads=4)
    assert isinstance(cfg, FSNHFConfig) and cfg.hidden_size == 32 and cfg.num_hidden_layers == 4
    assert cfg.to_fsn_config() == hf.FSNConfig(dim=32, n_heads=4)
    assert FSNHFConfig.from_fsn_config(cfg.to_fsn_config()).to_fsn_config() == cfg.to_fsn_config()
    with pytest.raises(ValueError, match="divisible"):
        FSNHFConfig(dim=10, n_heads=4)
    with pytest.raises(ValueError, match="mixer"):
        FSNHFConfig(mixer="mlp")


def test_an_export_saved_under_the_old_option_names_loads_with_its_projections(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fsn", "dim": 16, "n_layers": 1, "n_heads": 2,
                                                      "hidden": 8, "attn_proj": True, "attn_proj_heads": 1}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.projections, config.projected_heads) == (True, 1)
    assert config.to_fsn_config().projections


SAMPLE_VALUES = {int: 3, float: 0.25, bool: True, str: "meanfield"}


def test_every_fsn_config_field_round_trips_through_the_hf_config(tmp_path):
    """The HF config is derived from FSNConfig: every field, with FSNConfig's default, and a
    value away from the default survives save/load (a new FSNConfig knob needs no HF edit)."""
    import dataclasses

    for f in dataclasses.fields(hf.FSNConfig):
        assert getattr(FSNHFConfig(), f.name) == f.default, f.name
    changed = dict(dim=24, n_heads=3, n_layers=2, hidden=8, n_modes=5, n_harmonics=3, mixer="meanfield",
                   delay=False, k1_init=0.25, coupling_std=0.03, gate_std=0.04, readout_norm=True,
                   embed_scale=2.0, token_shift=True, projections=True, projected_heads=2, project_output=False,
                   vocab_size=100)
    assert set(changed) == set(hf.FSN_FIELDS)  # this test names every field: a new one must be added here
    fsn = hf.FSNConfig(**changed)
    FSNHFConfig.from_fsn_config(fsn).save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_fsn_config() == fsn


@pytest.mark.parametrize("stored, projections", [
    ({"attn_proj": True, "attn_proj_heads": 1, "attn_proj_out": False}, (True, 1, False)),
    ({"attn_proj": True}, (True, None, True)),
    ({}, (False, None, True)),
])
def test_a_config_json_from_an_old_export_loads(tmp_path, stored, projections):
    """An export written before the rename (attn_proj* keys) loads with its projections; one
    written before the projections existed (no key) loads without them."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "fsn", "dim": 16, "n_layers": 1, "n_heads": 2,
                                                      "hidden": 8, **stored}))
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.projections, config.projected_heads, config.project_output) == projections
    assert config.to_fsn_config().projections == projections[0]
    model = AutoModelForCausalLM.from_config(config)
    assert (model.fsn.blocks[0].attn.out_proj is not None) == (projections[0] and projections[2])


def test_a_fresh_model_keeps_the_fsn_init():
    """post_init must not re-initialise FSN's weights with HF's defaults."""
    m = tiny()
    torch.manual_seed(0)
    ref = hf.FSNLM(m.config.to_fsn_config())
    for (name, a), (_, b) in zip(m.fsn.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides", [{}, {"mixer": "meanfield", "n_modes": 8, "readout_norm": True,
                                             "embed_scale": 4.0, "delay": False},
                                       {"token_shift": True}, {"projections": True},
                                       {"projections": True, "token_shift": True},
                                       {"projections": True, "projected_heads": 1},
                                       {"projections": True, "project_output": False}])
def test_save_pretrained_and_auto_from_pretrained_round_trip(tmp_path, prompt, overrides):
    m = tiny(**overrides)
    m.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "fsn"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is FSNForCausalLM
    assert loaded.config.to_fsn_config() == m.config.to_fsn_config()
    for name, p in m.fsn.state_dict().items():
        assert torch.equal(p, loaded.fsn.state_dict()[name]), name
    assert torch.equal(loaded.fsn.blocks[0].attn.omega, m.fsn.blocks[0].attn.omega)  # a buffer not saved
    with torch.no_grad():
        assert torch.equal(loaded(prompt).logits, m(prompt).logits)


def test_labels_give_the_shifted_cross_entropy(model, prompt):
    labels = prompt.clone()
    labels[0, 3] = -100
    out = model(prompt, labels=labels)
    logits = model.fsn(prompt)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), labels[:, 1:].reshape(-1),
                                            ignore_index=-100)
    assert torch.allclose(out.loss, ref, rtol=0, atol=1e-6)
    assert getattr(out, hf.CACHE_NAME) is None  # no cache when training on labels


def test_the_model_trains():
    m = tiny().train()
    ids = torch.tensor([list(b"abcabcabcabcabcabc")])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = m(ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_padding_is_refused_and_an_all_ones_mask_accepted(model, prompt):
    with torch.no_grad():
        plain = model(prompt).logits
        assert torch.equal(model(prompt, attention_mask=torch.ones_like(prompt)).logits, plain)
    mask = torch.ones_like(prompt)
    mask[1, 0] = 0
    with pytest.raises(ValueError, match="padding"):
        model(prompt, attention_mask=mask)
    with pytest.raises(ValueError, match="padding"):
        model.generate(prompt, attention_mask=mask, max_new_tokens=2)


@pytest.mark.parametrize("mask, words", [
    (torch.tensor([1, 1, 0, 1, 1]), "must be 2-D"),                     # 1-D with a zero
    (torch.ones(2, 1, 5, 5), "must be 2-D"),                            # a 4-D mask
    (torch.full((2, 5), 0.5), "0s and 1s, got 0.5"),                    # fractional
    ([[1] * 5] * 2, "must be a tensor"),
])
def test_a_mask_of_another_shape_or_values_is_refused_not_ignored(model, prompt, mask, words):
    with pytest.raises((ValueError, TypeError), match=words):
        model(prompt, attention_mask=mask)


def test_bad_inputs_are_refused(model, prompt):
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.zeros(1, 2, 16))
    with pytest.raises(TypeError, match="FSNPhaseCache"):
        model(prompt, **{hf.CACHE_NAME: transformers.DynamicCache()})
    with pytest.raises(NotImplementedError, match="phases"):
        FSNPhaseCache(2).update(None, None, 0)


def test_greedy_generate_through_the_phase_cache_equals_full_forwards(model, prompt):
    n = 8
    seen = count_embedded_tokens(model)
    out = model.generate(prompt, max_new_tokens=n, do_sample=False, return_dict_in_generate=True)
    cached_tokens = sum(seen)
    seen.clear()
    uncached = model.generate(prompt, max_new_tokens=n, do_sample=False, use_cache=False)
    uncached_tokens = sum(seen)
    assert torch.equal(out.sequences, uncached)
    assert torch.equal(out.sequences, greedy_by_full_forwards(model, prompt, n))
    cache = getattr(out, hf.CACHE_NAME)
    assert isinstance(cache, FSNPhaseCache) and cache.get_seq_length() == prompt.shape[1] + n - 1
    # The cost: the cache embeds (and runs every block on) each token once; without it every
    # step reruns the whole sequence.
    B, T = prompt.shape
    assert cached_tokens == B * (T + n - 1)
    assert uncached_tokens == B * sum(T + i for i in range(n))


def test_sampling_with_and_without_the_cache_draws_the_same_tokens(model, prompt):
    torch.manual_seed(7)
    cached = model.generate(prompt, max_new_tokens=10, do_sample=True, top_k=30, temperature=1.3)
    torch.manual_seed(7)
    uncached = model.generate(prompt, max_new_tokens=10, do_sample=True, top_k=30, temperature=1.3, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 15)


def test_beam_search_reorders_the_phase_cache(model, prompt):
    cached = model.generate(prompt, max_new_tokens=5, num_beams=3, do_sample=False)
    assert torch.equal(cached, model.generate(prompt, max_new_tokens=5, num_beams=3, do_sample=False, use_cache=False))


def test_generation_continues_from_a_returned_cache(model, prompt):
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    more = model.generate(first.sequences, max_new_tokens=4, do_sample=False,
                          **{hf.CACHE_NAME: getattr(first, hf.CACHE_NAME)})
    assert torch.equal(more, model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False))


def test_a_chunk_after_a_cached_prefix_equals_the_full_forward(model, prompt):
    """Chunked prefill / continuation: several new tokens on a non-empty cache, then crop."""
    ids = torch.cat([prompt, prompt.flip(1)], dim=1)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        first = model(ids[:, :4], use_cache=True)
        cache = getattr(first, hf.CACHE_NAME)
        rest = model(ids[:, 4:], **{hf.CACHE_NAME: cache}).logits
        assert torch.allclose(torch.cat([first.logits, rest], 1), full, atol=1e-5, rtol=0)
        cache.crop(-3)  # drop the last 3 tokens, then feed them again
        again = model(ids[:, -3:], **{hf.CACHE_NAME: cache}).logits
    assert cache.get_seq_length() == ids.shape[1]
    assert torch.allclose(again, full[:, -3:], atol=1e-5, rtol=0)


# --- dtypes ----------------------------------------------------------------------------

# bf16 / fp16 compare the cached logits with the uncached ones to a tolerance of the dtype's
# rounding (a few ulps at logits of about 1); fp64 to float64 rounding.
DTYPE_ATOL = {torch.float64: 1e-9, torch.bfloat16: 3e-2, torch.float16: 4e-3}


@pytest.mark.parametrize("dtype", list(DTYPE_ATOL), ids=str)
@pytest.mark.parametrize("overrides", [{}, {"projections": True, "token_shift": True}])
def test_fsnlm_decodes_through_its_cache_in_every_dtype(dtype, overrides):
    """The phase cache is in the phases' dtype: prefill + decode equal the uncached forward."""
    torch.manual_seed(0)
    m = hf.FSNLM(hf.FSNConfig(dim=16, n_layers=2, n_heads=2, hidden=24, **overrides)).to(dtype).eval()
    idx = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = m(idx)
        first, cache = m.prefill(idx[:, :5])
        steps = torch.stack([m.decode(idx[:, t], cache)[0] for t in range(5, 9)], dim=1)
    assert cache.phases[0].dtype == dtype
    assert torch.allclose(first, full[:, :5], atol=DTYPE_ATOL[dtype], rtol=0)
    assert torch.allclose(steps, full[:, 5:], atol=DTYPE_ATOL[dtype], rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPE_ATOL), ids=str)
def test_generate_in_every_dtype_equals_full_forwards(tmp_path, prompt, dtype):
    tiny().save_pretrained(tmp_path)
    m = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=dtype).eval()
    assert m.fsn.embed.weight.dtype == dtype
    n = 6
    cached = m.generate(prompt, max_new_tokens=n, do_sample=False)
    assert torch.equal(cached, greedy_by_full_forwards(m, prompt, n))


def test_half_and_generate_under_cpu_bf16_autocast(prompt):
    half = tiny().half()
    assert torch.equal(half.generate(prompt, max_new_tokens=5, do_sample=False),
                       greedy_by_full_forwards(half, prompt, 5))
    m = tiny()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cached = m.generate(prompt, max_new_tokens=5, do_sample=False)
        uncached = m.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


# --- weights missing from a saved model -------------------------------------------------

def _drop_tensors(directory, names):
    from safetensors.torch import load_file, save_file

    weights = load_file(directory / "model.safetensors")
    for name in names:
        del weights[name]
    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})


def test_a_tensor_missing_from_the_weights_gets_the_fsn_init(tmp_path, prompt):
    """transformers initialises what it did not find with _init_weights: that must be the
    FSN init of the module (finite logits; the deterministic parts equal a fresh model's),
    and every loaded tensor stays as saved."""
    m = tiny(projections=True, token_shift=True, readout_norm=True)
    m.save_pretrained(tmp_path)
    missing = ["fsn.embed.weight", "fsn.blocks.0.attn.out_proj.weight", "fsn.blocks.1.attn.coupling_real",
               "fsn.blocks.1.attn.gate_proj.bias", "fsn.blocks.0.mix.shift_a", "fsn.readout_norm.weight",
               "fsn.readout.bias", "fsn.blocks.1.attn.in_proj.proj.weight"]
    _drop_tensors(tmp_path, missing)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.isfinite(loaded(prompt).logits).all()
    fresh, got = tiny(projections=True, token_shift=True, readout_norm=True).state_dict(), loaded.state_dict()
    for name, value in m.state_dict().items():
        if name not in missing:
            assert torch.equal(got[name], value), name
    for name in ["fsn.blocks.0.attn.out_proj.weight", "fsn.blocks.1.attn.gate_proj.bias", "fsn.blocks.0.mix.shift_a",
                 "fsn.readout_norm.weight", "fsn.readout.bias", "fsn.blocks.1.attn.in_proj.proj.weight"]:
        assert torch.equal(got[name], fresh[name]), name  # deterministic inits: identity, ramps, ones, zeros
    embed = got["fsn.embed.weight"]
    assert embed.abs().max() <= torch.pi and embed.std() > 1.0  # uniform on [-pi, pi)
    k1 = got["fsn.blocks.1.attn.coupling_real"][:, :, 0, 0, 0]
    assert abs(k1.mean().item() - 0.5) < 0.05  # K_1 = k1_init plus small noise


@pytest.mark.parametrize("overrides", [{"mixer": "meanfield", "n_modes": 8, "token_shift": True},
                                       {"projections": True, "projected_heads": 1, "readout_norm": True}])
def test_every_fsn_parameter_has_its_init_when_the_weights_are_missing(tmp_path, prompt, overrides):
    """No FSN parameter is left to HF's generic init: with every tensor but one missing, each
    parameter gets its module's FSN init (the deterministic ones equal a fresh model's)."""
    m = tiny(**overrides)
    m.save_pretrained(tmp_path)
    names = sorted(f"fsn.{k}" for k in m.fsn.state_dict())
    _drop_tensors(tmp_path, names[:-1])  # all but one, so that the file still holds a tensor
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.isfinite(loaded(prompt).logits).all()
    fresh = tiny(**overrides).state_dict()
    for name, value in loaded.state_dict().items():
        assert value.shape == fresh[name].shape and torch.isfinite(value).all(), name
        if name.endswith(("gate_proj.bias", "shift_g", "shift_a", "shift_b", "out_proj.weight", "in_proj.proj.weight",
                          "in_proj.proj.bias", "readout.bias", "readout_norm.weight", "readout_norm.bias")):
            assert torch.equal(value, fresh[name]), name


def test_a_config_with_more_layers_than_the_weights_gives_finite_logits(tmp_path, prompt):
    tiny().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.isfinite(loaded(prompt).logits).all()
    attn = loaded.fsn.blocks[2].attn
    assert torch.allclose(attn.gate_proj.bias, torch.full_like(attn.gate_proj.bias, GATE_BIAS_INIT))


# --- assisted generation ----------------------------------------------------------------

def test_prompt_lookup_and_an_assistant_model_give_the_greedy_tokens():
    """Assisted decoding crops the cache back to the accepted tokens (and transformers 5.25
    asks the cache to record its past): the output equals plain greedy decoding."""
    m = tiny()
    torch.manual_seed(1)
    assistant = FSNForCausalLM(FSNHFConfig(dim=16, n_layers=1, n_heads=2, hidden=24)).eval()
    ids = torch.tensor([list(b"abcabcabcab")])
    # an eos token for every call: transformers 5.0's prompt lookup fails without one (huggingface.md)
    greedy = m.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=0)
    assert torch.equal(m.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=0,
                                  prompt_lookup_num_tokens=3), greedy)
    assert torch.equal(m.generate(ids, max_new_tokens=12, do_sample=False, eos_token_id=0,
                                  assistant_model=assistant), greedy)


# --- fsn-export ------------------------------------------------------------------------

def test_fsn_export_writes_a_directory_that_auto_loads_with_the_same_logits(checkpoints, tmp_path, capsys):
    from fsn_model.checkpoint import load_checkpoint, load_model
    from fsn_model.hf import export

    out = tmp_path / "exported"
    assert export.main([checkpoints["fsn"], str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    loaded = AutoModelForCausalLM.from_pretrained(out)
    original, _ = load_model(checkpoints["fsn"])
    ids = torch.tensor([list(b"def f(x):\n  ")])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, original(ids))
    assert loaded.generate(ids, max_new_tokens=4, do_sample=False).shape == (1, ids.shape[1] + 4)
    card = (out / "README.md").read_text()
    ckpt = load_checkpoint(checkpoints["fsn"])
    val = ckpt["log"]["val"][-1]
    assert f"**{val['bpb']:.4f} val bits/byte** at step {val['step']}" in card
    assert json.dumps(ckpt["train_config"], indent=1) in card and json.dumps(ckpt["model_config"], indent=1) in card


def test_a_transformer_checkpoint_exports_as_an_equal_llama(checkpoints, tmp_path):
    from fsn_model.checkpoint import load_model
    from fsn_model.generate import sample
    from fsn_model.hf import export

    out = tmp_path / "llama"
    assert export.main([checkpoints["transformer"], str(out)]) == 0
    llama = AutoModelForCausalLM.from_pretrained(out)
    assert type(llama).__name__ == "LlamaForCausalLM"
    original, _ = load_model(checkpoints["transformer"])
    ids = torch.tensor([list(b"class A:\n    def f(self):")])
    with torch.no_grad():
        ref = original(ids)
        assert torch.allclose(llama(ids).logits, ref, atol=1e-5, rtol=1e-5)
    greedy = llama.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
    assert greedy == sample(original, ids[0].tolist(), 6, temperature=0)
    assert "LlamaForCausalLM" in (out / "README.md").read_text()



def test_fsn_export_refuses_in_one_line(checkpoints, tmp_path, capsys, one_line_error):
    from fsn_model.hf import export

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "cannot read" in one_line_error(export.main, [str(tmp_path / "junk.pt"), str(tmp_path / "t")])
    assert "not found" in one_line_error(export.main, [str(tmp_path / "none.pt"), str(tmp_path / "n")])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in one_line_error(export.main, [checkpoints["fsn"], str(tmp_path / "full")])
    assert export.main([checkpoints["fsn"], str(tmp_path / "full"), "--overwrite"]) == 0
    capsys.readouterr()
    assert "arguments" in one_line_error(export.main, [checkpoints["fsn"]])


def test_a_transformer_trained_with_token_shift_is_refused(checkpoints, tmp_path, one_line_error):
    """Llama has no token shift: exporting one would write a different model (and quote the
    checkpoint's bits/byte for it)."""
    from fsn_model.hf import export

    out = tmp_path / "shift"
    assert "token_shift" in one_line_error(export.main, [checkpoints["transformer-shift"], str(out)])
    assert not out.exists()


def _checkpoint_with(checkpoints, tmp_path, edit):
    from fsn_model.checkpoint import CHECKSUM_KEY, load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoints["fsn"])
    del ckpt[CHECKSUM_KEY]
    edit(ckpt)
    path = tmp_path / "edited.pt"
    save_checkpoint(str(path), ckpt)  # well-formed and checksummed, with a malformed part
    return str(path)


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["log"].update(val=[{"step": 3}]), "log['val'][0]"),
    (lambda c: c["log"].update(val=[{"step": 3, "bpb": float("nan")}]), "finite"),
    (lambda c: c["log"].update(val="3.1"), "log['val'] must be a list"),
    (lambda c: c.update(log=[1, 2]), "log must be a dict"),
    (lambda c: c.update(corpus="stdlib"), "corpus must be a dict"),
])
def test_a_malformed_log_is_refused_before_anything_is_written(checkpoints, tmp_path, edit, words, one_line_error):
    from fsn_model.hf import export

    out = tmp_path / "out"
    assert words in one_line_error(export.main, [_checkpoint_with(checkpoints, tmp_path, edit), str(out)])
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["edited.pt"]


def test_a_text_file_is_refused_in_words(tmp_path, one_line_error):
    from fsn_model.hf import export

    (tmp_path / "notes.txt").write_text("each line a note\n")
    err = one_line_error(export.main, [str(tmp_path / "notes.txt"), str(tmp_path / "out")])
    assert "not a file written by torch.save" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_leaves_nothing_half_written(checkpoints, tmp_path, capsys, monkeypatch, existing):
    """The last write fails with ENOSPC: one line naming DIR, exit 1, no DIR (or DIR as it
    was, with --overwrite), no temporary directory; the next run succeeds."""
    import errno

    from fsn_model.hf import export
    from fsn_model.hf.tokenization_fsn import FSNByteTokenizer

    out = tmp_path / "out"
    if existing:
        out.mkdir()
        (out / "config.json").write_text("{}")
    real_write_text = Path.write_text

    def full(self, *a, **k):
        if self.name == "README.md":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_text(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    argv = [checkpoints["fsn"], str(out)] + (["--overwrite"] if existing else [])
    with pytest.raises(SystemExit) as e:
        export.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.count("\n") == 1 and f"cannot write {out}: no space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["out"] if existing else [])
    if existing:
        assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "{}"
    monkeypatch.setattr(Path, "write_text", real_write_text)
    monkeypatch.setattr(FSNByteTokenizer, "save_pretrained", lambda self, d: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(SystemExit):
        export.main(argv)
    capsys.readouterr()
    monkeypatch.undo()
    assert export.main(argv) == 0
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}


def test_the_exported_tokenizer_loads_with_auto_and_runs_in_a_pipeline(checkpoints, tmp_path):
    from transformers import AutoTokenizer, pipeline

    from fsn_model.hf import export

    out = tmp_path / "exported"
    assert export.main([checkpoints["fsn"], str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "déf f(x):\n\treturn x  ,  \x00 ü 😀 ."
    assert tokenizer(text).input_ids == list(text.encode("utf-8"))
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    arbitrary = list(bytes(range(256)) + b"\xff\xfe\xc3")
    assert tokenizer.encode(tokenizer.decode(arbitrary)) == arbitrary  # any bytes, exactly
    assert len(tokenizer) == 256
    generated = pipeline("text-generation", model=str(out))("def f", max_new_tokens=6, do_sample=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([list(b"def f")])
    expected = tokenizer.decode(model.generate(ids, max_new_tokens=6, do_sample=False)[0])
    assert generated[0]["generated_text"] == expected


def test_the_hf_trainer_trains_an_fsn_model(tmp_path):
    """transformers' Trainer (which needs accelerate, in the hf extra) runs a few steps."""
    pytest.importorskip("accelerate", reason="accelerate (in the hf extra) is not installed")
    from transformers import Trainer, TrainingArguments

    ids = torch.tensor([list(b"abcdabcdabcdabcd")] * 8)
    data = [{"input_ids": row, "labels": row} for row in ids]
    model = tiny().train()
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], save_strategy="no", use_cpu=True, logging_steps=1)
    result = Trainer(model=model, args=args, train_dataset=data).train()
    assert result.global_step == 3 and torch.isfinite(torch.tensor(result.training_loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


# --- the declared floor -----------------------------------------------------------------

def test_the_transformers_floor_is_declared_once_and_met():
    """setup.py's hf extra and the docs state hf.TRANSFORMERS_FLOOR, the oldest release the
    tests were run on; importing fsn_model.hf checks it."""
    floor = hf.TRANSFORMERS_FLOOR
    assert f'"transformers>={floor}"' in (ROOT / "setup.py").read_text()
    assert f"transformers >= {floor}" in (ROOT / "fsn_model" / "hf" / "huggingface.md").read_text()
    version = tuple(int(x) for x in re.findall(r"\d+", transformers.__version__)[:2])
    assert version >= tuple(int(x) for x in floor.split(".")[:2])


def test_the_readme_snippet_runs():
    """The README's "Hugging Face" example runs and its own equality checks hold."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Hugging Face")
    section = text[start: text.find("\n## ", start + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace = {}
    exec(compile(block, "README.md (Hugging Face)", "exec"), namespace)
    assert namespace["out"].shape == (1, 20)


def test_fsn_export_without_the_hf_extra_is_one_line(monkeypatch, capsys):
    import fsn_cli

    def missing(name):
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")

    monkeypatch.setattr(fsn_cli.importlib, "import_module", missing)
    assert fsn_cli.export() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fsn-export: error: ") and '".[hf]"' in err
