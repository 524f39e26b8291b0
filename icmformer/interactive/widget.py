"""The click-to-segment annotation widget for JupyterLab (ipympl canvas + ipywidgets controls).

::

    %matplotlib widget
    ui = AnnotationUI(session, output_dir="annotations")
    display(ui.widget)

Left click on the image adds a positive click (a negative one while the mode toggle says
"negative"); right click always adds a negative click. Buttons: undo, reset object, next object,
export. The status line (CSS class ``icmformer-status``) shows the current object, its clicks,
the mask area, the seconds the last click took and how many times the image branch was encoded;
messages (export paths, errors) go to the line below (class ``icmformer-message``). The same
actions are methods (:meth:`AnnotationUI.click`, :meth:`undo`, ...), for scripts and tests.

Without the ipympl backend the figure is not a widget: the UI still works through the methods and
shows a static picture after each change.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from icmformer.interactive.session import AnnotationSession
from icmformer.interactive.visual import NEGATIVE_COLOR, POSITIVE_COLOR, mask_edge, object_color

STATUS_CLASS = "icmformer-status"
MESSAGE_CLASS = "icmformer-message"


class AnnotationUI:
    """Interactive annotation of one image with an :class:`AnnotationSession`.

    Args:
        session: the session to drive.
        output_dir: where Export writes (``None``: Export reports that no directory was given).
        stem: file name stem of the exported files (default: the image name).
        overwrite: let Export replace files it did not write itself in this session.
        max_width_in, max_height_in: figure size limits in inches (100 px per inch).
    """

    def __init__(
        self,
        session: AnnotationSession,
        output_dir: str | Path | None = None,
        stem: str | None = None,
        overwrite: bool = False,
        alpha: float = 0.45,
        max_width_in: float = 7.5,
        max_height_in: float = 6.0,
    ) -> None:
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        self.session = session
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.stem = stem
        self.overwrite = overwrite
        self.alpha = alpha
        self.last_export = None
        h, w = session.image_size
        scale = min(max_width_in / w, max_height_in / h)
        with plt.ioff():
            self.fig = plt.figure(figsize=(w * scale, h * scale), dpi=100)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_axis_off()
        self.ax.imshow(session.image, interpolation="nearest")
        self._overlay = self.ax.imshow(np.zeros((h, w, 4), np.float32), interpolation="nearest")
        self._others = self.ax.scatter([], [], s=28, c="white", edgecolors="black", linewidths=0.8)
        self._pos = self.ax.scatter([], [], s=70, c=[np.array(POSITIVE_COLOR) / 255], edgecolors="white", linewidths=1.5)
        self._neg = self.ax.scatter([], [], s=70, c=[np.array(NEGATIVE_COLOR) / 255], edgecolors="white", linewidths=1.5)
        self.ax.set_xlim(-0.5, w - 0.5)
        self.ax.set_ylim(h - 0.5, -0.5)

        canvas = self.fig.canvas
        self.interactive = isinstance(canvas, widgets.DOMWidget)
        if self.interactive:
            canvas.header_visible = False
            canvas.footer_visible = False
            canvas.resizable = False
            canvas.capture_scroll = False
            canvas.toolbar_position = "left"
        self._cid = canvas.mpl_connect("button_press_event", self._on_press)

        self.mode = widgets.ToggleButtons(
            options=[("+ positive", True), ("- negative", False)], value=True,
            tooltips=["left click adds a foreground click", "left click adds a background click (right click always does)"],
        )  # fmt: skip
        self.mode.style.button_width = "86px"
        button = dict(layout=widgets.Layout(width="auto"))
        self.undo_button = widgets.Button(description="Undo", icon="undo", tooltip="remove the last click", **button)
        self.reset_button = widgets.Button(description="Reset object", icon="eraser", tooltip="remove the clicks of this object", **button)
        self.next_button = widgets.Button(description="Next object", icon="plus", tooltip="finish this object, start another", **button)
        self.export_button = widgets.Button(description="Export", icon="save", button_style="success", tooltip="write PNG masks, COCO JSON and the click list", **button)  # fmt: skip
        self.mode.observe(lambda _: self._update_status(), names="value")
        self.undo_button.on_click(lambda _: self._guard(self.undo))
        self.reset_button.on_click(lambda _: self._guard(self.reset))
        self.next_button.on_click(lambda _: self._guard(self.next_object))
        self.export_button.on_click(lambda _: self._guard(self.export))
        self.status = widgets.HTML()
        self.status.add_class(STATUS_CLASS)
        self.message = widgets.HTML()
        self.message.add_class(MESSAGE_CLASS)
        controls = widgets.HBox([widgets.Label("left click:"), self.mode, self.undo_button, self.reset_button, self.next_button, self.export_button])
        if self.interactive:
            view = canvas
        else:
            view = widgets.Output()
            self._static = view
        self.widget = widgets.VBox([controls, view, self.status, self.message])
        self.redraw()
        if not self.interactive:
            self.say("Static view: clicks need the ipympl backend (%matplotlib widget).")

    # ------------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def say(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "#205020"
        self.message.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def status_text(self) -> str:
        mode = "positive" if self.mode.value else "negative"
        return f"{self.session.summary()} | left click: {mode}"

    def overlay_rgba(self) -> np.ndarray:
        """``H x W x 4`` float overlay: every annotated object in its colour, the current one
        stronger and with an opaque outline."""
        h, w = self.session.image_size
        rgba = np.zeros((h, w, 4), np.float32)
        for k, obj in enumerate(self.session.objects):
            if obj.mask is None:
                continue
            m = obj.mask
            color = np.asarray(object_color(k), np.float32) / 255
            current = k == self.session.current_index
            rgba[m, :3] = color
            rgba[m, 3] = min(1.0, self.alpha + (0.1 if current else -0.1))
            if current and m.any():
                rgba[mask_edge(m), 3] = 1.0
        return rgba

    def redraw(self) -> None:
        s = self.session
        self._overlay.set_data(self.overlay_rgba())
        cur = s.current.clicks

        def xy(clicks):
            return np.array([[c.coords[1], c.coords[0]] for c in clicks], np.float32).reshape(-1, 2)

        self._pos.set_offsets(xy([c for c in cur if c.is_positive]))
        self._neg.set_offsets(xy([c for c in cur if not c.is_positive]))
        others = [c for k, o in enumerate(s.objects) if k != s.current_index for c in o.clicks]
        self._others.set_offsets(xy(others))
        self._update_status()
        if self.interactive:
            self.fig.canvas.draw_idle()
        else:
            from IPython.display import clear_output, display

            with self._static:
                clear_output(wait=True)
                display(self.fig)

    def _update_status(self) -> None:
        self.status.value = f"<b>{html.escape(self.status_text())}</b>"

    def _guard(self, action, *args):
        try:
            return action(*args)
        except Exception as exc:  # shown in the UI: a widget callback has nowhere else to report
            self.say(f"{type(exc).__name__}: {exc}", error=True)
            return None

    # ------------------------------------------------------------------------ events
    def _on_press(self, event) -> None:
        if event.inaxes is not self.ax or event.xdata is None or event.ydata is None or getattr(event, "dblclick", False):
            return
        toolbar = getattr(self.fig.canvas, "toolbar", None)
        if toolbar is not None and str(getattr(toolbar, "mode", "")):
            return  # pan / zoom in progress
        button = int(getattr(event, "button", 1) or 1)
        if button == 1:
            positive = bool(self.mode.value)
        elif button == 3:
            positive = False
        else:
            return
        h, w = self.session.image_size
        y = min(max(int(round(event.ydata)), 0), h - 1)
        x = min(max(int(round(event.xdata)), 0), w - 1)
        self._guard(self.click, y, x, positive)

    # ------------------------------------------------------------------------ actions
    def click(self, y: int, x: int, positive: bool | None = None) -> np.ndarray:
        """Add a click (``positive=None``: the mode toggle decides) and redraw."""
        positive = bool(self.mode.value) if positive is None else bool(positive)
        mask = self.session.add_click(y, x, positive)
        self.say(f"{'positive' if positive else 'negative'} click at y={y}, x={x}: {self.session.last_latency_s:.3f} s")
        self.redraw()
        return mask

    def undo(self) -> None:
        self.session.undo()
        self.say("undone")
        self.redraw()

    def reset(self) -> None:
        self.session.reset()
        self.say(f"object {self.session.current_index + 1}: clicks removed")
        self.redraw()

    def next_object(self) -> None:
        before = self.session.current_index
        self.session.next_object()
        if self.session.current_index == before:
            self.say("this object has no click yet; click on it first")
        else:
            self.say(f"object {before + 1} done; now annotating object {self.session.current_index + 1}")
        self.redraw()

    def export(self):
        """Write the annotation (see :meth:`AnnotationSession.export`); returns the paths."""
        if self.output_dir is None:
            raise ValueError("no output directory: create the UI with output_dir=...")
        files = self.session.export(self.output_dir, self.stem, overwrite=self.overwrite)
        self.last_export = files
        names = ", ".join(p.name for p in files.all())
        self.say(f"exported {len(files.masks)} object(s) to {self.output_dir.resolve()}: {names}")
        return files

    def close(self) -> None:
        import matplotlib.pyplot as plt

        self.fig.canvas.mpl_disconnect(self._cid)
        plt.close(self.fig)
        self.widget.close()
