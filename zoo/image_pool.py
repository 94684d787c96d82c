"""The image history buffer D is trained on (Shrivastava et al. 2017, SimGAN, §2.3; Zhu et al. 2017, CycleGAN, §4).

Per image, as the reference `ImagePool` (junyanz/pytorch-CycleGAN-and-pix2pix `util/image_pool.py`; a
common course version buffers whole batches instead): while
the pool holds fewer than `size` images, each incoming image is stored and returned unchanged. Once
full, with probability `p` a uniformly chosen stored image is returned and the incoming one takes its
slot; otherwise the incoming image is returned. Images are handled in batch order, so a later image of
a batch can receive an earlier one. Every draw comes from the explicit `generator` (never the global
RNG), and `state_dict()` holds the stored images and the generator state, so a resumed run continues
the same sequence.
"""

from __future__ import annotations

import torch


class ImagePool:
    def __init__(self, size: int = 50, p: float = 0.5, generator: torch.Generator | None = None):
        if size < 0 or not 0.0 <= p <= 1.0:
            raise ValueError("image pool size must be >= 0 and p must lie in [0, 1]")
        self.size, self.p = size, p
        self.generator = generator if generator is not None else torch.Generator()
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """The batch D should see for these freshly generated images (detached)."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() < self.p:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot].to(image.device, image.dtype))
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {
            "size": self.size,
            "p": self.p,
            "images": torch.stack(self.images).cpu() if self.images else None,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.size, self.p = int(state["size"]), float(state["p"])
        images = state["images"]
        self.images = [] if images is None else [img.clone() for img in images]
        self.generator.set_state(state["generator"])
