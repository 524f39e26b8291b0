# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Click-to-segment annotation with iCMFormer
#
# Run all cells, then click on the image:
#
# - **left click**: a positive (object) click, or a negative one while the toggle says *negative*;
# - **right click**: a negative (background) click;
# - **Undo** removes the last click, **Reset object** all clicks of the current object,
#   **Next object** starts another object (each object has its own colour);
# - **Export** writes one PNG mask per object, a COCO-style JSON with RLE masks and the click list
#   (`<name>_clicks.json`) to `output_dir`. Set `resume` to that click file to continue an
#   annotation, or `clicks` to replay clicks (that is how the notebook runs headless).
#
# The status line under the image shows the seconds each click took and how often the image branch
# was encoded: the encoding is computed once per image (and once per new zoom-in crop) and reused by
# every click. The logic lives in `icmformer.interactive`; this notebook only wires it up.

# %% tags=["parameters"]
image_path = None  # an image file; or a dataset image:
dataset = None  # GrabCut, Berkeley, DAVIS, COCO_MVal, ... (with index and data_root); neither: a synthetic demo image
index = 0
data_root = "data"
checkpoint = None  # a weights file, e.g. "results/runs/vit/model.safetensors"; None: model_name's weights
model_name = "icmformer_vit_demo_320"  # the model used when checkpoint is None (the shipped CPU demo model)
pretrained = True  # with checkpoint None: the weights shipped with the package (False: UNTRAINED, smoke tests)
device = "cpu"
threads = None  # torch CPU threads (None: the PyTorch default); 1 is often faster when other jobs share the cores
zoom_in = True
flip = True
output_dir = "results/annotate"  # where Export writes
stem = None  # file name stem of the exported files (default: the image name)
clicks = []  # replayed before the UI opens: [[y, x, positive], ...], or one such list per object
resume = None  # a <name>_clicks.json written by Export: continue that annotation
export = False  # write the files at the end of a (headless) run
overwrite = False  # let Export replace files that this session did not write

# %%
# %matplotlib widget
import statistics

import torch
from IPython.display import HTML, display
from PIL import Image

from icmformer.interactive import AnnotationSession, AnnotationUI, draw_clicks, load_image, load_model, overlay_masks, resolve_path

# %%
if threads:
    torch.set_num_threads(int(threads))
# relative paths are relative to the repository root (also when the notebook runs in notebooks/)
checkpoint, image_path, data_root, output_dir, resume = map(resolve_path, (checkpoint, image_path, data_root, output_dir, resume))
model = load_model(checkpoint, None if checkpoint else model_name, device=device, pretrained=bool(pretrained) and not checkpoint)
if model.checkpoint_path is None:
    display(HTML(
        '<div style="background:#fde7e9;border:2px solid #b00020;padding:8px;font-weight:bold">'
        f"WARNING: no checkpoint given: {model.name} has UNTRAINED weights, its masks are meaningless. "
        "Set <code>pretrained = True</code> for the shipped demo model, or <code>checkpoint</code> to a trained model, "
        "e.g. the demo pipeline's <code>results/runs/vit/model.safetensors</code>.</div>"
    ))
print(f"model: {model.name}, checkpoint: {model.checkpoint_path}, input {model.default_input_size} px, "
      f"device {device}, {torch.get_num_threads()} CPU threads")

image, image_info = load_image(image_path, dataset, index, data_root)
print(f"image: {image_info.get('file') or image_info['name']} ({image.shape[0]}x{image.shape[1]})"
      + ("  [synthetic demo image: set image_path or dataset]" if image_info.get("synthetic") else ""))

session = AnnotationSession.from_model(model, image, image_info, zoom_in=zoom_in, flip=flip)
if resume:
    session.load_clicks(resume)
    print(f"resumed {len(session.annotated)} object(s) from {resume}")
if clicks:
    session.replay(clicks)
    print(f"replayed {sum(o.num_clicks for o in session.annotated)} click(s) on {len(session.annotated)} object(s)")
latencies = [t for o in session.annotated for t in o.latencies_s]
if latencies:
    print(f"per-click latency: median {statistics.median(latencies):.3f} s, first {latencies[0]:.3f} s (includes warm-up), "
          f"image encodings: {session.encode_count} for {len(latencies)} clicks")

# %%
ui = AnnotationUI(session, output_dir=output_dir, stem=stem, overwrite=overwrite)
display(ui.widget)

# %% [markdown]
# A static picture of the annotation so far (re-run the cell after clicking to refresh it; it is
# what a headless run shows).

# %%
picture = overlay_masks(image, session.masks)
picture = draw_clicks(picture, [c for o in session.annotated for c in o.clicks])
display(Image.fromarray(picture))
print(session.summary())

# %%
if export:
    files = session.export(output_dir, stem, overwrite=overwrite)
    print("exported:", *[str(p) for p in files.all()], sep="\n  ")
