"""The modular-addition transformer of paper (b) Appendix H, and a fast full-batch loss.

One layer, decoder only: p = 113, inputs `[a, b, =]` with '=' the token p (vocabulary
p + 1 = 114), d_model 128, 4 heads of 32, d_mlp 512, context 3, ReLU, no LayerNorm. The
modules carry the names of the analyzed matrices in the paper:

    embed      (114, 128)  token embedding W_E
    pos_embed  (3, 128)    learned positional embedding (not analyzed; the paper names none)
    W_Q, W_K, W_V (128, 128)  all four heads stacked: rows h*32 .. h*32+31 are head h
    out_proj   (128, 128)  W_O, from the concatenated heads back to the residual stream
    fc1        (512, 128)  MLP in, with bias
    fc2        (128, 512)  MLP out, with bias
    unembed    (113, 128)  W_U, logits of the p residues (the '=' token is never a label)

Attention and unembedding have no biases. The initialization follows the progress-measures
code of Nanda et al. (2023), which the papers do not replace: every weight is normal with
sd 1/sqrt(d_model), except unembed (sd 1/sqrt(vocabulary)); biases start at zero.

`forward` is the reference: every position, as the model is defined. `FullBatch.loss` is the
same loss computed the fast way, exact up to round-off: the '=' token at the last position
makes its query the same for every example, so the attention scores and values need only
be computed once per token of the vocabulary (113 rows, not 3 x 3,831), and only the last
position goes through the MLP and the unembedding. `FullBatch.lean_loss` is the fast loss again,
laid out for torch.compile on a CPU core (`lean_logits_t`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

P = 113  # the modulus (paper (b) Appendix H)
D_MODEL = 128  # residual stream width
N_HEADS = 4
D_HEAD = 32
D_MLP = 512
N_CTX = 3  # [a, b, =]
ANALYZED = ("embed", "W_Q", "W_K", "W_V", "out_proj", "fc1", "fc2", "unembed")  # paper's order
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ModAddTransformer(nn.Module):
    """One attention layer (4 heads) and one ReLU MLP on a residual stream, no LayerNorm."""

    def __init__(self, p: int = P):
        super().__init__()
        if not isinstance(p, int) or p < 2:
            raise ValueError(f"p must be an integer >= 2, got {p!r}")
        self.p = p
        self.embed = nn.Embedding(p + 1, D_MODEL)  # token p is '='
        self.pos_embed = nn.Embedding(N_CTX, D_MODEL)
        self.W_Q = nn.Linear(D_MODEL, N_HEADS * D_HEAD, bias=False)
        self.W_K = nn.Linear(D_MODEL, N_HEADS * D_HEAD, bias=False)
        self.W_V = nn.Linear(D_MODEL, N_HEADS * D_HEAD, bias=False)
        self.out_proj = nn.Linear(N_HEADS * D_HEAD, D_MODEL, bias=False)
        self.fc1 = nn.Linear(D_MODEL, D_MLP)
        self.fc2 = nn.Linear(D_MLP, D_MODEL)
        self.unembed = nn.Linear(D_MODEL, p, bias=False)
        self.register_buffer("causal", torch.ones(N_CTX, N_CTX, dtype=torch.bool).tril(), persistent=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Causal multi-head attention: (B, T, d_model) -> (B, T, d_model)."""
        batch, length, _ = x.shape

        def heads(linear: nn.Linear) -> torch.Tensor:  # (B, H, T, d_head)
            return linear(x).view(batch, length, N_HEADS, D_HEAD).transpose(1, 2)

        scores = heads(self.W_Q) @ heads(self.W_K).transpose(-1, -2) / math.sqrt(D_HEAD)  # (B, H, T, T)
        scores = scores.masked_fill(~self.causal[:length, :length], float("-inf"))
        mixed = scores.softmax(dim=-1) @ heads(self.W_V)  # (B, H, T, d_head)
        return self.out_proj(mixed.transpose(1, 2).reshape(batch, length, N_HEADS * D_HEAD))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits at every position: (B, T) int64 -> (B, T, p)."""
        x = self.embed(tokens) + self.pos_embed.weight[: tokens.shape[1]]  # (B, T, d_model)
        x = x + self.attention(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.unembed(x)


def make_transformer(seed: int, p: int = P, dtype: str = "float32") -> ModAddTransformer:
    """The model with Nanda et al.'s initialization drawn from a generator seeded with `seed`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    model = ModAddTransformer(p)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():  # fixed order: reproducible draws
            if name.endswith("bias"):
                parameter.zero_()
            else:
                sd = 1 / math.sqrt(p + 1) if name.startswith("unembed") else 1 / math.sqrt(D_MODEL)
                parameter.normal_(0.0, sd, generator=generator)
    return model.to(DTYPES[dtype])


def weight_matrices(model_or_state: nn.Module | dict) -> dict[str, torch.Tensor]:
    """The eight analyzed matrices, in the paper's order, W_Q/W_K/W_V with all heads stacked."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {name: state[f"{name}.weight"] for name in ANALYZED}


def last_logits(model: ModAddTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """Reference logits at the last ('=') position: (B, 3) -> (B, p)."""
    return model(tokens)[:, -1]


@dataclass(frozen=True)
class FullBatch:
    """A fixed set of `[a, b, =]` examples, with the fast loss of the model on them."""

    a: torch.Tensor  # (B,) int64, first operand
    b: torch.Tensor  # (B,) int64, second operand
    labels: torch.Tensor  # (B,) int64, (a + b) mod p

    @classmethod
    def from_tokens(cls, tokens: torch.Tensor, labels: torch.Tensor, p: int) -> FullBatch:
        """Check that every row reads `[a, b, =]` with a, b < p; keep a, b and the labels."""
        if tokens.ndim != 2 or tokens.shape[1] != N_CTX:
            raise ValueError(f"tokens must have shape (B, {N_CTX}), got {tuple(tokens.shape)}")
        if not bool((tokens[:, 2] == p).all()) or bool((tokens[:, :2] >= p).any()):
            raise ValueError(f"the fast loss needs rows [a, b, {p}] with a, b < {p}")
        return cls(tokens[:, 0].contiguous(), tokens[:, 1].contiguous(), labels)

    def to(self, device: torch.device) -> FullBatch:
        """The same examples on `device`."""
        return FullBatch(self.a.to(device), self.b.to(device), self.labels.to(device))

    def subset(self, rows: torch.Tensor) -> FullBatch:
        """The examples at `rows` (a mini-batch)."""
        return FullBatch(self.a[rows], self.b[rows], self.labels[rows])

    def tokens(self, p: int) -> torch.Tensor:
        """The `[a, b, =]` rows again: (B, 3)."""
        return torch.stack([self.a, self.b, torch.full_like(self.a, p)], dim=1)

    def logits(self, model: ModAddTransformer) -> torch.Tensor:
        """Logits at the last position, computed per token then gathered: (B, p)."""
        return fast_last_logits(model, self.a, self.b)

    def loss(self, model: ModAddTransformer) -> torch.Tensor:
        """Mean cross-entropy at the last position, the fast way."""
        return F.cross_entropy(self.logits(model), self.labels)

    def lean_loss(self, model: ModAddTransformer) -> torch.Tensor:
        """The same loss through `lean_logits_t`, its cross-entropy as log-sum-exp minus the label's logit
        along the class axis (dim 0): `F.cross_entropy` wants the classes in dim 1, a transposed view."""
        logits = lean_logits_t(model, self.a, self.b)  # (p, B)
        return (torch.logsumexp(logits, dim=0) - logits.gather(0, self.labels[None])[0]).mean()

    def reference_loss(self, model: ModAddTransformer) -> torch.Tensor:
        """The same loss through the model's own forward at every position (the baseline)."""
        return F.cross_entropy(last_logits(model, self.tokens(model.p)), self.labels)


def fast_last_logits(model: ModAddTransformer, a: torch.Tensor, b: torch.Tensor,
                     onehot: bool | None = None) -> torch.Tensor:
    """`last_logits` for rows `[a, b, =]`, with attention written out for the three positions.

    onehot: gather the per-token rows by a one-hot matmul (True) or `index_select` (False);
    None picks `index_select` on CPU and the matmul elsewhere. Both have deterministic
    gradients; plain indexing does not (its backward accumulates with atomics).
    """
    p, embed, pos = model.p, model.embed.weight, model.pos_embed.weight
    rows = torch.cat([embed[:p] + pos[0], embed[:p] + pos[1], (embed[p] + pos[2])[None]])  # (2p+1, d)
    q = model.W_Q(rows[-1]).view(N_HEADS, D_HEAD)  # the '=' query, the same for every example
    k = model.W_K(rows).view(-1, N_HEADS, D_HEAD)  # (2p+1, H, d_head)
    scores = (k * q).sum(-1) / math.sqrt(D_HEAD)  # (2p+1, H): per token and position
    table = torch.cat([scores, model.W_V(rows)], dim=1)  # (2p+1, H + H * d_head)
    slots = torch.stack([a, b + p, torch.full_like(a, 2 * p)], dim=1).reshape(-1)  # (3B,) rows of the table
    taken = _take(table, slots, onehot).view(len(a), N_CTX, -1)  # (B, 3, H + H * d_head)
    weights = taken[..., :N_HEADS].softmax(dim=1)  # (B, 3, H), softmax over the three positions
    values = taken[..., N_HEADS:].reshape(len(a), N_CTX, N_HEADS, D_HEAD)
    mixed = (weights[..., None] * values).sum(dim=1)  # (B, H, d_head)
    x = rows[-1] + model.out_proj(mixed.reshape(len(a), N_HEADS * D_HEAD))  # (B, d_model)
    x = x + model.fc2(torch.relu(model.fc1(x)))
    return model.unembed(x)


def lean_logits_t(model: ModAddTransformer, a: torch.Tensor, b: torch.Tensor,
                  onehot: bool | None = None) -> torch.Tensor:
    """`fast_last_logits` transposed, (p, B), laid out for torch.compile on one CPU core.

    The same arithmetic in another memory layout (`step_impl="lean"`): one score and one value
    table per position, the '=' position broadcast instead of gathered, and everything after
    the attention feature-major, i.e. the residual stream as (d_model, B). Then the bias
    gradients and the log-sum-exp of the loss reduce along contiguous memory, which the
    compiled CPU kernels do faster than across rows (benchmarks/modadd_step.py times this
    against the fast way). onehot: as in `fast_last_logits`.
    """
    p, embed, pos = model.p, model.embed.weight, model.pos_embed.weight
    equals = embed[p] + pos[2]  # (d,): the '=' token at the last position, the same in every row
    q = model.W_Q(equals).view(N_HEADS, D_HEAD)

    def score(x: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., H): the '=' query against keys of x
        return (model.W_K(x).unflatten(-1, (N_HEADS, D_HEAD)) * q).sum(-1) / math.sqrt(D_HEAD)

    first, second = embed[:p] + pos[0], embed[:p] + pos[1]  # (p, d): the number tokens at positions 0, 1
    scores = torch.stack([_take(score(first), a, onehot), _take(score(second), b, onehot),
                          score(equals).expand(len(a), -1)], dim=1)  # (B, 3, H)
    weights = scores.softmax(dim=1)[..., None]  # (B, 3, H, 1)
    mixed = (weights[:, 0] * _take(model.W_V(first), a, onehot).view(-1, N_HEADS, D_HEAD)
             + weights[:, 1] * _take(model.W_V(second), b, onehot).view(-1, N_HEADS, D_HEAD)
             + weights[:, 2] * model.W_V(equals).view(N_HEADS, D_HEAD))  # (B, H, d_head)
    x = equals[:, None] + model.out_proj.weight @ mixed.reshape(len(a), N_HEADS * D_HEAD).T  # (d, B)
    hidden = torch.relu(model.fc1.weight @ x + model.fc1.bias[:, None])  # (d_mlp, B)
    x = x + model.fc2.weight @ hidden + model.fc2.bias[:, None]
    return model.unembed.weight @ x  # (p, B)


def _take(table: torch.Tensor, index: torch.Tensor, onehot: bool | None) -> torch.Tensor:
    """Rows `index` of `table`: by a one-hot matmul or `index_select` (None: `index_select` on CPU)."""
    if (table.device.type != "cpu") if onehot is None else onehot:
        return F.one_hot(index, len(table)).to(table.dtype) @ table
    return table.index_select(0, index)


# --- readouts for the Fourier analysis of paper (b) Appendix H ----------------------------
# The paper gives the quantities, not their code; these are our definitions, stated here.


def head_keys(state: dict[str, torch.Tensor], p: int = P) -> np.ndarray:
    """Keys of the p number tokens in every head, embed[:p] @ W_K,h^T (no position): (H, p, d_head)."""
    embed = state["embed.weight"][:p].double().cpu().numpy()  # (p, d_model)
    return np.einsum("td,hkd->htk", embed, head_key_weights(state))


def head_key_weights(state: dict[str, torch.Tensor]) -> np.ndarray:
    """W_K split by head: (H, d_head, d_model), head h reading rows h*32 .. h*32+31."""
    return state["W_K.weight"].double().cpu().numpy().reshape(N_HEADS, D_HEAD, D_MODEL)


def key_gram_lambda_max(state: dict[str, torch.Tensor]) -> np.ndarray:
    """Largest eigenvalue of each head's key Gram matrix W_K,h^T W_K,h: (H,)."""
    return np.linalg.svd(head_key_weights(state), compute_uv=False)[:, 0] ** 2


def key_token_projection(state: dict[str, torch.Tensor], p: int = P) -> np.ndarray:
    """Each number token's embedding along the top eigenvector of its head's key Gram: (H, p).

    The eigenvector (top right singular vector of W_K,h) gets its sign fixed so that its
    largest |entry| is positive; the tokens with the largest |projection| are the ones the
    head's dominant key direction reads most.
    """
    _, _, vt = np.linalg.svd(head_key_weights(state), full_matrices=False)  # (H, d_head, d_model)
    top = vt[:, 0]  # (H, d_model)
    top = top * np.sign(top[np.arange(len(top)), np.abs(top).argmax(axis=1)])[:, None]
    return top @ state["embed.weight"][:p].double().cpu().numpy().T


def attention_preference(state: dict[str, torch.Tensor], p: int = P) -> np.ndarray:
    """Score of the '=' query on each number token in the first slot, per head: (H, p)."""
    weight = {name: state[f"{name}.weight"].double().cpu().numpy() for name in ("embed", "pos_embed", "W_Q", "W_K")}
    query = weight["W_Q"] @ (weight["embed"][p] + weight["pos_embed"][2])  # (H * d_head,)
    keys = (weight["embed"][:p] + weight["pos_embed"][0]) @ weight["W_K"].T  # (p, H * d_head)
    products = keys.reshape(p, N_HEADS, D_HEAD) * query.reshape(N_HEADS, D_HEAD)
    return products.sum(-1).T / math.sqrt(D_HEAD)


def token_dft_energy(matrix: np.ndarray) -> np.ndarray:
    """Fraction of the energy at each frequency 0..p-1 of the DFT along the token axis (rows)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"matrix must be 2-D (tokens, features), got shape {matrix.shape}")
    energy = (np.abs(np.fft.fft(matrix, axis=0)) ** 2).sum(axis=1)  # (p,)
    return energy / energy.sum()


def rule_kernel(logits: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(Delta): mean over examples of the centered logit of z = (a + b + Delta) mod p: (p,)."""
    logits = np.asarray(logits, dtype=np.float64)
    p = logits.shape[1]
    centered = logits - logits.mean(axis=1, keepdims=True)
    columns = (np.asarray(a)[:, None] + np.asarray(b)[:, None] + np.arange(p)) % p  # (n, p)
    return np.take_along_axis(centered, columns, axis=1).mean(axis=0)


def kernel_spectrum(kernel: np.ndarray) -> np.ndarray:
    """Fraction of the power of k(Delta) at each frequency 0..p-1."""
    power = np.abs(np.fft.fft(np.asarray(kernel, dtype=np.float64))) ** 2
    total = power.sum()
    return power / total if total > 0 else power
