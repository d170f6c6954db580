"""Per-sample distances d(a, b) used by the minority score and by self-guidance.

Each distance maps two batches (B, …) to (B,). ``lpips-vgg`` / ``lpips-alex`` /
``lpips-squeeze`` expect images in [−1, 1] with 1 or 3 channels (1 is repeated to 3). The
``lpips`` wheel ships only the linear heads; the ImageNet trunk is read from a local file found
by :func:`minority.weights.find_weights` (torch hub's cache; fetched and hash-checked when allowed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from minority.errors import UserError
from minority.weights import find_weights

Distance = Callable[[Tensor, Tensor], Tensor]

LPIPS_TRUNKS = {
    "vgg": ("vgg16", "vgg16-397923af.pth"),
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth"),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}


def l2_distance(a: Tensor, b: Tensor) -> Tensor:
    """Plain (not squared) L2 norm of the flattened difference: (B, …) -> (B,)."""
    return (a - b).flatten(1).norm(dim=1)


def mse_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference over all but the batch axis: (B, …) -> (B,)."""
    return (a - b).flatten(1).square().mean(dim=1)


def l1_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference over all but the batch axis: (B, …) -> (B,)."""
    return (a - b).flatten(1).abs().mean(dim=1)


class LPIPSDistance(nn.Module):
    """LPIPS (Zhang et al. 2018) with an offline trunk; frozen, in eval mode.

    Args:
        trunk: "vgg", "alex" or "squeeze".
        weights_path: the trunk's torchvision state dict (file or folder); None searches the
            standard places for its canonical file name.
    """

    def __init__(self, trunk: str = "vgg", weights_path: str | None = None):
        super().__init__()
        if trunk not in LPIPS_TRUNKS:
            raise UserError(f"Unknown LPIPS trunk '{trunk}'; choose one of {sorted(LPIPS_TRUNKS)}.")
        import lpips
        import torchvision

        arch, filename = LPIPS_TRUNKS[trunk]
        path = find_weights(filename, weights_path, purpose=f"LPIPS {trunk} trunk")
        self.lpips = lpips.LPIPS(net=trunk, pretrained=True, pnet_rand=True, verbose=False)
        reference = getattr(torchvision.models, arch)(weights=None)
        reference.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        for block in self.lpips.net.children():
            for name, layer in block.named_children():
                layer.load_state_dict(reference.features[int(name)].state_dict())
        self.requires_grad_(False)
        self.eval()

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a, b: (B, 1 or 3, H, W) in [−1, 1] -> (B,)."""
        if a.shape[1] == 1:
            a, b = a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)
        return self.lpips(a, b).flatten()


PLAIN_DISTANCES: dict[str, Distance] = {"l2": l2_distance, "mse": mse_distance, "l1": l1_distance}


def build_distance(name: str, weights_path: str | None = None) -> Distance:
    """A distance by name: "l2", "mse", "l1", or "lpips-vgg" / "lpips-alex" / "lpips-squeeze"."""
    if name in PLAIN_DISTANCES:
        return PLAIN_DISTANCES[name]
    if name.startswith("lpips-"):
        return LPIPSDistance(name.removeprefix("lpips-"), weights_path)
    choices = sorted(PLAIN_DISTANCES) + [f"lpips-{t}" for t in LPIPS_TRUNKS]
    raise UserError(f"Unknown distance '{name}'; choose one of {choices}.")
