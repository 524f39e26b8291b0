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
# # What do the cross-modality blocks look at?
#
# For an image and a list of clicks, this notebook shows
#
# 1. the **cross-attention** of every cross-modality block for one query token (the token under a
#    click), per head and averaged over heads, overlaid on the image;
# 2. the **click-branch features** after the cross blocks: the norm of each click token and their
#    first three principal components, next to the prediction;
# 3. a **side-by-side comparison** of two models: two checkpoints, or (without checkpoints) one
#    architecture with two `cross_variant`s.
#
# The model sees the whole image resized to its input size (no zoom-in, no flip), so its token grid
# covers the image; the clicks are fed one at a time, each prediction becoming the next previous
# mask, and the maps come from the last pass. With the default variant `X,Y,XY` the click tokens are
# the queries, so a map shows *where in the image the click token looks*; with `X,Y,YX` the image
# tokens are the queries (the titles say which). Each map is divided by its maximum for display;
# windowed blocks (ViT-B) attend only inside their 14x14-token window, the rest is zero.

# %% tags=["parameters"]
image_path = None  # an image file; or a dataset image:
dataset = None  # GrabCut, Berkeley, DAVIS, COCO_MVal, ... (with index and data_root); neither: a synthetic demo image
index = 0
data_root = "data"
clicks = [[120, 122, True], [200, 40, False]]  # [y, x, positive] in pixels of the image, in click order
query_click = 0  # whose token is the query (index into clicks; -1: the last click)
direction = "row"  # "row": what the query token attends to; "column": which queries attend to it
checkpoint = None  # model A (trained weights, e.g. "results/runs/vit/model.safetensors"); None: untrained models
checkpoint_b = None  # model B, compared with A
model_name = "icmformer_vit_tiny_224"  # the architecture when checkpoints are None
cross_variants = ["X,Y,XY", "X,Y,YX"]  # the two variants compared when checkpoints are None
model_overrides = {}  # more create_model overrides for untrained models (e.g. smaller sizes)
device = "cpu"
max_heads = None  # show at most this many heads per block (None: all)
output_dir = None  # save the figures as PNG files here (None: only show them)

# %%
# %matplotlib inline

from IPython.display import HTML, display

from icmformer.interactive import load_image, load_model, resolve_path, run_attention
from icmformer.interactive.figures import plot_attention, plot_click_features, plot_comparison, stream_text

# %%
# relative paths are relative to the repository root (also when the notebook runs in notebooks/)
checkpoint, checkpoint_b, image_path, data_root, output_dir = map(resolve_path, (checkpoint, checkpoint_b, image_path, data_root, output_dir))
if checkpoint_b is not None and checkpoint is None:
    raise ValueError("checkpoint_b needs checkpoint (model A) as well")
if checkpoint is not None:
    specs = [("A: " + checkpoint.name, dict(checkpoint=checkpoint))]
    if checkpoint_b is not None:
        specs.append(("B: " + checkpoint_b.name, dict(checkpoint=checkpoint_b)))
else:
    if len(cross_variants) != 2:
        raise ValueError(f"cross_variants must name two variants, got {cross_variants!r}")
    specs = [(f"{model_name} {v}", dict(model_name=model_name, cross_variant=v, **model_overrides)) for v in cross_variants]
    display(HTML(
        '<div style="background:#fde7e9;border:2px solid #b00020;padding:8px;font-weight:bold">'
        "WARNING: no checkpoint given: the models have UNTRAINED weights, so their attention maps and masks "
        "are meaningless. Set <code>checkpoint</code> (and <code>checkpoint_b</code>) to trained models, e.g. "
        "the demo pipeline's <code>results/runs/vit/model.safetensors</code>.</div>"
    ))
models = [(label, load_model(device=device, **spec)) for label, spec in specs]
image, image_info = load_image(image_path, dataset, index, data_root)
print(f"image: {image_info.get('file') or image_info['name']} ({image.shape[0]}x{image.shape[1]}), clicks: {clicks}")
results = [run_attention(m, image, clicks, label=label) for label, m in models]
for r in results:
    print(f"{r.label}: {r.num_blocks} cross blocks, {r.cross_attention[0].shape[0] if r.num_blocks else 0} heads, "
          f"grid {r.grid[0]}x{r.grid[1]}, input {r.input_size[0]} px; maps show {stream_text(r, direction)}")

figures = {}

# %% [markdown]
# ## Cross-attention of each block, per head and averaged (model A)

# %%
figures["attention_a"] = plot_attention(results[0], query_click, direction, max_heads=max_heads)
display(figures["attention_a"])

# %% [markdown]
# ## Click-branch features and the prediction (model A)

# %%
figures["click_features_a"] = plot_click_features(results[0])
display(figures["click_features_a"])

# %% [markdown]
# ## Side by side: model A and model B
# Each row: the prediction, the head-averaged attention of every cross block for the query click,
# and the norm of the click tokens.

# %%
if len(results) == 2:
    figures["comparison"] = plot_comparison(results, query_click, direction)
    display(figures["comparison"])
    figures["attention_b"] = plot_attention(results[1], query_click, direction, max_heads=max_heads)
    display(figures["attention_b"])
else:
    print("only one model: set checkpoint_b to compare two checkpoints")

# %%
if output_dir is not None:
    out = output_dir
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(out / f"{name}.png", dpi=100)
    print("saved:", *sorted(str(p) for p in out.glob("*.png")), sep="\n  ")
