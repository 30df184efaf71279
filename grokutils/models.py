"""The papers' MLP (Table 3): 784-200-200-10, ReLU, default init scaled up."""
from __future__ import annotations

import torch
from torch import nn

N_CLASSES = 10  # MNIST digits: the MLP's outputs, its one-hot targets

LAYERS = ("fc1", "fc2", "fc3")  # the analyzed weight matrices, input to output
DTYPES = {"float64": torch.float64, "float32": torch.float32}


class MLP(nn.Module):
    """Three fully connected layers with ReLU between them."""

    def __init__(self, widths: tuple[int, ...] = (784, 200, 200, 10)):
        super().__init__()
        self.fc1 = nn.Linear(widths[0], widths[1])
        self.fc2 = nn.Linear(widths[1], widths[2])
        self.fc3 = nn.Linear(widths[2], widths[3])

    def hidden1(self, x: torch.Tensor) -> torch.Tensor:
        """Activations after the first ReLU: (B, 200), used for activation sparsity."""
        return torch.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 784) -> (B, 10)
        return self.fc3(torch.relu(self.fc2(self.hidden1(x))))


def make_mlp(seed: int, init_scale: float = 8.0, dtype: str = "float64") -> MLP:
    """PyTorch default init under `torch.manual_seed(seed)`, then every parameter x init_scale."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    torch.manual_seed(seed)
    model = MLP().to(DTYPES[dtype])
    with torch.no_grad():
        for parameter in model.parameters():  # weights and biases alike (paper: x8)
            parameter.mul_(init_scale)
    return model


def weight_matrices(model_or_state: nn.Module | dict) -> dict[str, torch.Tensor]:
    """The analyzed weight matrices `{fc1: (200, 784), fc2: (200, 200), fc3: (10, 200)}`."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return {name: state[f"{name}.weight"] for name in LAYERS}
