"""grokutils.transformer: the Appendix H model, the fast loss against the reference, Fourier readouts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokutils import transformer
from grokutils.data import modular_addition_data
from grokutils.transformer import FullBatch, last_logits, make_transformer, weight_matrices


@pytest.fixture(scope="module")
def pairs():
    """Every pair for p = 113 and its 30% training split."""
    return modular_addition_data(113, 0.3, seed=0)


def _batch(data, rows=None) -> FullBatch:
    rows = data.train_idx if rows is None else rows
    return FullBatch.from_tokens(data.tokens[rows], data.labels[rows], data.p)


def test_analyzed_matrices_have_the_papers_names_and_shapes():
    shapes = {name: tuple(w.shape) for name, w in weight_matrices(make_transformer(0)).items()}
    assert shapes == {"embed": (114, 128), "W_Q": (128, 128), "W_K": (128, 128), "W_V": (128, 128),
                      "out_proj": (128, 128), "fc1": (512, 128), "fc2": (128, 512), "unembed": (113, 128)}
    assert tuple(make_transformer(0).pos_embed.weight.shape) == (3, 128)


def test_init_is_seeded_nanda_style_and_dtype_only_casts():
    a, b, c = make_transformer(1), make_transformer(1, dtype="float64"), make_transformer(2)
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert pa.dtype == torch.float32 and pb.dtype == torch.float64
        torch.testing.assert_close(pa.double(), pb, rtol=0, atol=0, msg=name)
        if name.endswith("bias"):
            assert not pa.any(), name
        else:
            assert not torch.equal(pa, pc), name
            expected = 1 / math.sqrt(114) if name.startswith("unembed") else 1 / math.sqrt(128)
            assert abs(pa.std().item() - expected) < 0.15 * expected, name


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dtype must be one of"):
        make_transformer(0, dtype="bfloat16")
    with pytest.raises(ValueError, match="p must be an integer >= 2, got 1"):
        transformer.ModAddTransformer(1)
    tokens = torch.tensor([[1, 2, 113], [3, 4, 5]])
    with pytest.raises(ValueError, match=r"rows \[a, b, 113\]"):
        FullBatch.from_tokens(tokens, torch.tensor([3, 7]), 113)
    with pytest.raises(ValueError, match=r"shape \(B, 3\)"):
        FullBatch.from_tokens(tokens[:, :2], torch.tensor([3, 7]), 113)


def test_attention_is_causal():
    model = make_transformer(0, dtype="float64")
    tokens = torch.tensor([[5, 7, 113], [5, 90, 113]])
    logits = model(tokens)  # (2, 3, 113)
    torch.testing.assert_close(logits[0, 0], logits[1, 0], rtol=0, atol=0)
    assert not torch.allclose(logits[0, 2], logits[1, 2])


@pytest.mark.parametrize("dtype, atol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("fast", ["loss", "lean_loss"])
def test_fast_logits_and_gradients_match_the_reference(pairs, dtype, atol, fast):
    model, batch = make_transformer(3, dtype=dtype), _batch(pairs)
    reference = last_logits(model, batch.tokens(113))
    torch.testing.assert_close(batch.logits(model), reference, rtol=0, atol=atol)
    torch.testing.assert_close(transformer.lean_logits_t(model, batch.a, batch.b).T, reference, rtol=0, atol=atol)
    torch.testing.assert_close(getattr(batch, fast)(model), batch.reference_loss(model), rtol=0, atol=atol)
    grads = []
    for loss_of in (getattr(FullBatch, fast), FullBatch.reference_loss):
        model.zero_grad()
        loss_of(batch, model).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        scale = grads[1][name].abs().max().item() + 1e-30
        assert (grads[0][name] - grads[1][name]).abs().max().item() <= 100 * atol * max(scale, 1e-3), name


def test_fast_and_reference_training_agree_to_round_off(pairs):
    """Twenty AdamW steps (float64) through any of the three losses end at the same weights up to round-off."""
    batch = _batch(pairs, pairs.train_idx[:300])
    finals = []
    for loss_of in (FullBatch.reference_loss, FullBatch.loss, FullBatch.lean_loss):
        model = make_transformer(0, dtype="float64")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=1.0)
        for _ in range(20):
            optimizer.zero_grad()
            loss_of(batch, model).backward()
            optimizer.step()
        finals.append(model.state_dict())
    for name, tensor in finals[0].items():
        for other in finals[1:]:
            torch.testing.assert_close(other[name], tensor, rtol=0, atol=1e-9, msg=name)


def test_reference_loss_is_cross_entropy_at_the_last_position(pairs):
    model, batch = make_transformer(0, dtype="float64"), _batch(pairs, pairs.train_idx[:50])
    expected = F.cross_entropy(model(pairs.tokens[pairs.train_idx[:50]])[:, 2], pairs.labels[pairs.train_idx[:50]])
    torch.testing.assert_close(batch.reference_loss(model), expected, rtol=0, atol=0)


def test_token_dft_energy_finds_a_planted_frequency():
    t = np.arange(113)[:, None]
    matrix = np.cos(2 * np.pi * 16 * t / 113 + np.arange(8)[None])  # (113, 8): frequency 16 only
    energy = transformer.token_dft_energy(matrix)
    assert energy.shape == (113,) and energy.sum() == pytest.approx(1.0)
    assert energy[16] == pytest.approx(0.5) and energy[113 - 16] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must be 2-D"):
        transformer.token_dft_energy(np.ones(5))


def test_rule_kernel_peaks_at_the_rule_the_logits_follow():
    p = 13
    a, b = (x.ravel() for x in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    for shift in (0, 3):
        logits = np.eye(p)[(a + b + shift) % p] * 5.0  # the model answers a + b + shift
        kernel = transformer.rule_kernel(logits, a, b)
        assert int(np.argmax(kernel)) == shift
        assert kernel.sum() == pytest.approx(0.0, abs=1e-12)  # centered logits
    spectrum = transformer.kernel_spectrum(np.cos(2 * np.pi * 2 * np.arange(p) / p))
    assert spectrum[2] + spectrum[p - 2] == pytest.approx(1.0)


def test_key_readouts_match_direct_computations():
    model = make_transformer(4, dtype="float64")
    state = model.state_dict()
    keys = transformer.head_keys(state)  # (4, 113, 32)
    direct = state["embed.weight"][:113] @ state["W_K.weight"][32:64].T  # head 1
    np.testing.assert_allclose(keys[1], direct.numpy(), atol=1e-12)
    w_k2 = state["W_K.weight"][64:96].numpy()  # head 2: (32, 128)
    assert transformer.key_gram_lambda_max(state)[2] == pytest.approx(np.linalg.eigvalsh(w_k2.T @ w_k2).max())
    projection = transformer.key_token_projection(state)
    _, vectors = np.linalg.eigh(w_k2.T @ w_k2)
    expected = state["embed.weight"][:113].numpy() @ vectors[:, -1]
    np.testing.assert_allclose(np.abs(projection[2]), np.abs(expected), atol=1e-10)
    assert projection.shape == (4, 113)


def test_attention_preference_is_the_models_own_score_on_slot_a():
    model = make_transformer(5, dtype="float64")
    tokens = torch.tensor([[t, 0, 113] for t in range(113)])
    x = model.embed(tokens) + model.pos_embed.weight  # (113, 3, 128)
    q = model.W_Q(x[:, 2]).view(113, 4, 32)
    k = model.W_K(x[:, 0]).view(113, 4, 32)
    scores = ((q * k).sum(-1) / math.sqrt(32)).T  # (4, 113)
    np.testing.assert_allclose(transformer.attention_preference(model.state_dict()), scores.detach().numpy(),
                               atol=1e-12)


def test_both_gathers_agree_and_gradients_are_deterministic(pairs):
    """index_select (CPU default) and the one-hot matmul (GPU default) give the same logits;
    repeated backward passes give bitwise equal gradients (plain indexing would not)."""
    model, batch = make_transformer(2), _batch(pairs)
    by_index = transformer.fast_last_logits(model, batch.a, batch.b, onehot=False)
    by_matmul = transformer.fast_last_logits(model, batch.a, batch.b, onehot=True)
    torch.testing.assert_close(by_index, by_matmul, rtol=0, atol=1e-5)
    torch.testing.assert_close(transformer.lean_logits_t(model, batch.a, batch.b, onehot=False),
                               transformer.lean_logits_t(model, batch.a, batch.b, onehot=True), rtol=0, atol=1e-5)
    gradients = []
    for _ in range(3):
        model.zero_grad()
        batch.loss(model).backward()
        gradients.append([p.grad.clone() for p in model.parameters()])
    for again in gradients[1:]:
        assert all(torch.equal(g0, g1) for g0, g1 in zip(gradients[0], again))
