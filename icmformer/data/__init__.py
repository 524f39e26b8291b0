"""Datasets (benchmark readers, training sets), click samplers and augmentation.

Import from the submodules (``icmformer.data.datasets`` ...); this file stays light so that
importing the package does not pull in OpenCV/albumentations before they are needed.
"""
