"""Models: registry, iCMFormer (ViT and Swin), checkpoints, complexity."""
