"""The iCMFormer model: backbone (plain ViT or Swin) + neck + SegFormer head.

Input contract
--------------
- ``image``: float tensor ``B x 3 x H x W`` with RGB values in ``[0, 1]``; the model applies the
  ImageNet normalisation itself.
- ``clicks``: float tensor ``B x N x 3`` of ``(y, x, label)`` rows; ``y`` row, ``x`` column in
  pixels of ``image``; label ``1`` positive, ``0`` negative, ``-1`` padding.
- ``prev_mask``: float tensor ``B x 1 x H x W`` in ``[0, 1]`` (the previous probability map; zeros
  or ``None`` before the first click).

Output: logits ``B x 1 x H x W`` (apply a sigmoid for probabilities), bilinearly upsampled
(``align_corners=True``) from the head's 1/4 resolution to the input size.

The click-independent part (image patch embedding and the shared first group on the image
branch) is available separately: ``state = model.encode_image(image)``, then
``model.predict_clicks(state, clicks, prev_mask)`` returns the same logits as
``model(image, clicks, prev_mask)``, so an interactive session encodes each image once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icmformer.models.clicks import encode_clicks, validate_clicks
from icmformer.models.config import ICMFormerConfig
from icmformer.models.head import SegFormerHead
from icmformer.models.neck import SimpleFPN

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageState:
    """The cached, click-independent image encoding returned by :meth:`ICMFormer.encode_image`.

    ``features`` are the image features after the shared first group (ViT: ``B x N x C`` tokens;
    Swin: ``B x h x w x C`` at the cross-block resolution); ``embedding`` is the Swin patch
    embedding needed by the early-fusion stream (``None`` for ViT); ``grid`` the ViT token grid;
    ``skip`` the 1/4-resolution image features of a convolutional stem (``stem="conv"``, ``B x C x
    H/4 x W/4``; ``None`` for the patch-embedding models of the paper).
    """

    features: torch.Tensor
    image_size: tuple[int, int]
    embedding: torch.Tensor | None = None
    grid: tuple[int, int] | None = None
    skip: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.features.shape[0]

    @classmethod
    def cat(cls, states) -> "ImageState":
        """Concatenate states along the batch dimension (``features`` and ``embedding``).

        Raises ``ValueError`` for an empty list, or states whose ``image_size``/``grid`` differ or
        that mix a ``None`` and a tensor ``embedding``."""
        states = list(states)
        if not states:
            raise ValueError("ImageState.cat needs at least one state")
        first = states[0]
        for i, s in enumerate(states[1:], start=1):
            if tuple(s.image_size) != tuple(first.image_size):
                raise ValueError(f"ImageState.cat: state {i} has image_size {tuple(s.image_size)}, state 0 {tuple(first.image_size)}")
            if (None if s.grid is None else tuple(s.grid)) != (None if first.grid is None else tuple(first.grid)):
                raise ValueError(f"ImageState.cat: state {i} has grid {s.grid}, state 0 {first.grid}")
            if (s.embedding is None) != (first.embedding is None):
                raise ValueError(f"ImageState.cat: state {i} and state 0 disagree on having an embedding")
            if (s.skip is None) != (first.skip is None):
                raise ValueError(f"ImageState.cat: state {i} and state 0 disagree on having stem features (skip)")
        if len(states) == 1:
            return cls(first.features, tuple(first.image_size), first.embedding, first.grid, first.skip)
        emb = None if first.embedding is None else torch.cat([s.embedding for s in states], dim=0)
        skip = None if first.skip is None else torch.cat([s.skip for s in states], dim=0)
        return cls(torch.cat([s.features for s in states], dim=0), tuple(first.image_size), emb, first.grid, skip)

    def select(self, indices) -> "ImageState":
        """The batch items ``indices`` (an int, a slice, or a sequence/tensor of ints) as a state;
        an int keeps the batch dimension (batch size 1)."""
        if isinstance(indices, int):
            n = self.batch_size
            if not -n <= indices < n:
                raise IndexError(f"ImageState.select: index {indices} out of range for batch size {n}")
            indices = slice(indices % n, indices % n + 1)
        elif not isinstance(indices, slice):
            indices = torch.as_tensor(indices, dtype=torch.long, device=self.features.device)
            if indices.ndim != 1:
                raise ValueError(f"ImageState.select: indices must be 1-D, got shape {tuple(indices.shape)}")
        emb = None if self.embedding is None else self.embedding[indices]
        skip = None if self.skip is None else self.skip[indices]
        return ImageState(self.features[indices], tuple(self.image_size), emb, self.grid, skip)


class ICMFormer(nn.Module):
    def __init__(self, config: ICMFormerConfig, name: str | None = None) -> None:
        super().__init__()
        self.config = config.validate()
        self.name = name
        if config.backbone == "vit":
            from icmformer.models.vit import ViTBackbone

            self.backbone = ViTBackbone(config)
            self.neck = SimpleFPN(config.embed_dim, config.neck_dims)
            if config.stem == "conv":
                # the stem's 1/4-resolution image features join the neck's 1/4 map (a skip
                # connection for sharp boundaries; demo models only, not in the paper)
                self.skip_proj = nn.Conv2d(config.stem_channels, config.neck_dims[0], 1)
        else:
            from icmformer.models.swin import SwinBackbone

            self.backbone = SwinBackbone(config)
            self.neck = None
        self.head = SegFormerHead(config.feature_channels, config.head_channels, config.head_dropout)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.init_weights()

    # ------------------------------------------------------------------------------ setup
    @property
    def default_input_size(self) -> int:
        return self.config.img_size

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def init_weights(self) -> None:
        """Initialisation as the official code: ViT backbone Linear layers xavier-uniform with zero
        bias, patch embedding xavier on the flattened kernel, position embedding N(0, 0.02); Swin
        Linear layers truncated normal (std 0.02); LayerNorms 1/0. The click embedding, neck and
        head keep PyTorch's default initialisation (they sit outside the official backbone)."""
        if self.backbone.patch_embed.proj.weight.is_meta:
            return
        vit = self.config.backbone == "vit"
        for name, m in self.backbone.named_modules():
            if name.startswith("click_embed"):
                continue
            if isinstance(m, nn.Linear):
                if vit:
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if vit:
            w = self.backbone.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.backbone.pos_embed, std=0.02)

    def set_fused_attention(self, enabled: bool) -> "ICMFormer":
        """Switch every attention (timm blocks, Swin windows, cross blocks) between PyTorch's fused
        scaled-dot-product attention and the explicit softmax path."""
        for m in self.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = bool(enabled)
        return self

    # ------------------------------------------------------------------------------ checks
    def _check_image(self, image: torch.Tensor) -> None:
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"image must be a torch.Tensor B x 3 x H x W, got {type(image).__name__}")
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must have shape B x 3 x H x W, got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(
                f"image must be a float tensor with values in [0, 1], got dtype {image.dtype} "
                "(convert uint8 images with image.float() / 255)"
            )

    def _check_prev_mask(self, prev_mask: torch.Tensor | None, batch: int, size: tuple[int, int]) -> torch.Tensor:
        if prev_mask is None:
            return torch.zeros(batch, 1, *size, device=self.device, dtype=torch.float32)
        if not isinstance(prev_mask, torch.Tensor) or not prev_mask.is_floating_point():
            raise ValueError("prev_mask must be a float tensor B x 1 x H x W with values in [0, 1]")
        if prev_mask.ndim != 4 or prev_mask.shape[1] != 1:
            raise ValueError(f"prev_mask must have shape B x 1 x H x W, got {tuple(prev_mask.shape)}")
        if tuple(prev_mask.shape[-2:]) != tuple(size):
            raise ValueError(
                f"prev_mask is {prev_mask.shape[-2]}x{prev_mask.shape[-1]} (HxW) but the image is {size[0]}x{size[1]}"
            )
        if prev_mask.shape[0] != batch:
            raise ValueError(f"prev_mask has batch size {prev_mask.shape[0]} but the image batch has {batch}")
        return prev_mask.float()

    # ------------------------------------------------------------------------------ forward
    def encode_image(self, image: torch.Tensor) -> ImageState:
        """The click-independent part: image patch embedding + shared first group on the image."""
        self._check_image(image)
        size = (image.shape[-2], image.shape[-1])
        x = (image - self.pixel_mean) / self.pixel_std
        if self.config.backbone == "vit":
            feats, grid, skip = self.backbone.encode_image(x)
            return ImageState(features=feats, image_size=size, grid=grid, skip=skip)
        emb, feats = self.backbone.encode_image(x)
        return ImageState(features=feats, image_size=size, embedding=emb)

    def click_maps(
        self, clicks: torch.Tensor, prev_mask: torch.Tensor | None, size: tuple[int, int], batch: int,
        allow_outside_clicks: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """``B x 3 x H x W`` click features: previous mask, positive disks, negative disks."""
        clicks = validate_clicks(clicks, size, batch, allow_outside=allow_outside_clicks).to(self.device)
        prev = self._check_prev_mask(prev_mask, batch, size).to(self.device)
        return torch.cat([prev, encode_clicks(clicks, size, self.config.click_radius)], dim=1)

    def predict_clicks(
        self,
        state: ImageState,
        clicks: torch.Tensor,
        prev_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        allow_outside_clicks: bool = False,
    ):
        """Logits ``B x 1 x H x W`` for ``clicks`` on the image encoded in ``state``.

        With ``return_attention=True`` returns ``(logits, extras)`` where ``extras`` holds
        ``cross_attention`` (one ``B x heads x N_query x N_key`` tensor per cross block; windowed
        attention is expanded to the full token grid with zeros across windows) and
        ``click_tokens`` (the click-branch tokens after the cross blocks).
        """
        maps = self.click_maps(clicks, prev_mask, state.image_size, state.batch_size, allow_outside_clicks)
        return self.predict_from_maps(state, maps, return_attention)

    def predict_from_maps(self, state: ImageState, maps: torch.Tensor, return_attention: bool = False):
        """:meth:`predict_clicks` from ready click maps ``B x 3 x H x W`` (prev mask, pos, neg)."""
        size = state.image_size
        if self.config.backbone == "vit":
            feat, extras = self.backbone.forward_clicks(state.features, state.grid, maps, return_attention)
            feats = self.neck(feat)
            if state.skip is not None:
                feats[0] = feats[0] + self.skip_proj(state.skip)
            if return_attention:
                extras["grid"] = state.grid
        else:
            feats, extras = self.backbone.forward_clicks(state.embedding, state.features, maps, return_attention)
        logits = self.head(feats)
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        return (logits, extras) if return_attention else logits

    def forward(self, image: torch.Tensor, clicks: torch.Tensor, prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Full forward pass: ``logits = model(image, clicks, prev_mask)``."""
        return self.predict_clicks(self.encode_image(image), clicks, prev_mask)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
