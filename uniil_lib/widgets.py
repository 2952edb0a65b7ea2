"""Small explorers for the notebooks: ipywidgets where a front end shows them, a static plot elsewhere.

Three explorers, each a function that returns an ipywidgets box in a live notebook and a matplotlib
``Figure`` everywhere else:

- :func:`zero_shot_explorer` (notebook 01): pick an image, edit the prompt templates and the class names,
  see CLIP's class probabilities as a bar chart.
- :func:`expert_usage_explorer` (the MoE notebooks): task and layer sliders over an expert-usage array of
  shape ``(tasks, layers, experts)``.
- :func:`hyperparameter_explorer` (notebook 02): a slider over one hyperparameter that reruns a small
  continual experiment and replots its accuracy matrix and forgetting.

**Which one you get.** A kernel cannot see whether a front end will draw a widget, so :func:`use_widgets`
decides in this order:

1. the ``interactive`` argument, when it is ``True`` or ``False``;
2. the environment variable ``UNIIL_WIDGETS``: ``1``/``on`` for widgets, ``0``/``off`` for static plots;
3. static when ``CI`` or ``PYTEST_CURRENT_TEST`` is set (CI and nbval run notebooks with no one watching:
   a widget there is dead output, a static plot is checked for errors like any other cell);
4. static outside an IPython kernel (plain Python, a terminal IPython) or without ipywidgets;
5. widgets otherwise: Jupyter, JupyterLab, VS Code and Colab all draw them.

A static plot is drawn with pyplot and closed again, so a notebook shows it exactly once: as the value of
the cell's last expression (or with ``display(fig)``).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np
import torch

WIDGETS_ENV_VAR = "UNIIL_WIDGETS"
_ON, _OFF = frozenset({"1", "on", "true", "yes", "interactive"}), frozenset({"0", "off", "false", "no", "static"})


def use_widgets(interactive: bool | None = None) -> bool:
    """Whether an explorer should build widgets (True) or a static figure (False); see the module docstring."""
    if interactive is not None:
        return bool(interactive)
    setting = os.environ.get(WIDGETS_ENV_VAR, "").strip().lower()
    if setting in _ON | _OFF:
        return setting in _ON
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST"):
        return False
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _closed(fig):
    """Detach ``fig`` from pyplot so that the inline backend does not show it a second time."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


def _live(inputs: dict, draw: Callable, *, rows: Sequence | None = None):
    """A box of controls above an output area that shows ``draw(**values)`` and redraws on every change.

    Args:
        inputs: keyword of ``draw`` -> the widget whose value it takes.
        draw: returns a Figure, or raises ValueError with a message for the learner (a template without
            ``{}``, say), which is shown instead of a traceback.
        rows: the widgets to lay out above the plot (default: the inputs, one per row).

    The box's ``figure`` attribute holds the last figure drawn.
    """
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()
    box = widgets.VBox([*(rows if rows is not None else inputs.values()), out])
    box.figure = None

    def redraw(_=None):
        with out:
            out.clear_output(wait=True)
            try:
                box.figure = draw(**{key: widget.value for key, widget in inputs.items()})
                display(box.figure)
            except ValueError as error:
                print(f"cannot draw: {error}")

    for widget in inputs.values():
        widget.observe(redraw, names="value")
    redraw()
    return box


# ----------------------------------------------------------------------------------------------------
# zero-shot explorer (notebook 01)
# ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def class_probabilities(clip, image, class_names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """CLIP's zero-shot probabilities of one PIL image over ``class_names``, ``(C,)``, summing to 1.

    The prompt-ensemble head of :func:`uniil_lib.clip.zero_shot_weights`, then a softmax over the
    temperature-scaled cosines.
    """
    from .clip import zero_shot_logits, zero_shot_weights

    if not class_names:
        raise ValueError("give at least one class name")
    weights = zero_shot_weights(clip, list(class_names), list(templates))
    features = clip.encode_images(clip.preprocess(image).unsqueeze(0))
    return zero_shot_logits(clip, features, weights)[0].softmax(dim=-1).float().cpu().numpy()


def _zero_shot_figure(clip, images, index: int, class_names: Sequence[str], templates: Sequence[str]):
    import matplotlib.pyplot as plt

    image, label = images[index]
    probabilities = class_probabilities(clip, image, class_names, templates)
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 0.28 * len(class_names) + 1.6),
                                      gridspec_kw={"width_ratios": [1, 2.2]})
    left.imshow(image)
    left.axis("off")
    left.set_title(f"image {index}\ntrue: {images.class_names[label]}", fontsize=9)
    right.barh(list(class_names), probabilities, color="tab:blue")
    right.invert_yaxis()
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    right.tick_params(labelsize=8)
    right.set_title(f"{len(templates)} template(s), e.g. {templates[0]!r}", fontsize=9)
    fig.tight_layout()
    return _closed(fig)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def zero_shot_explorer(clip, images, *, templates: Sequence[str], class_names: Sequence[str] | None = None,
                       index: int = 0, interactive: bool | None = None):
    """Class probabilities of one image under editable prompts.

    Args:
        clip: a :class:`~uniil_lib.clip.ClipModel`.
        images: an :class:`~uniil_lib.data.base.ImageSet` to pick images from.
        templates: prompt templates, each with one ``{}`` (one per line in the widget's text box).
        class_names: the candidate classes (default: the image set's own class names).
        index: the image shown first.
        interactive: True for widgets, False for a static figure, None to decide with :func:`use_widgets`.

    Returns:
        an ipywidgets ``VBox`` (image slider, template and class-name boxes, the plot), or a matplotlib
        ``Figure``: the image and a horizontal bar per class name.
    """
    names = list(class_names if class_names is not None else images.class_names)
    if not use_widgets(interactive):
        return _zero_shot_figure(clip, images, index, names, list(templates))
    import ipywidgets as widgets

    box_layout = widgets.Layout(width="48%", height=f"{min(max(6, len(names)), 16) * 1.6}em")
    inputs = {
        "index": widgets.IntSlider(value=index, min=0, max=len(images) - 1, description="image",
                                   continuous_update=False),
        "templates": widgets.Textarea(value="\n".join(templates), description="templates", layout=box_layout,
                                      continuous_update=False),
        "class_names": widgets.Textarea(value="\n".join(names), description="classes", layout=box_layout,
                                        continuous_update=False),
    }

    def draw(index, templates, class_names):
        return _zero_shot_figure(clip, images, index, _lines(class_names), _lines(templates))

    rows = [inputs["index"], widgets.HBox([inputs["templates"], inputs["class_names"]])]
    return _live(inputs, draw, rows=rows)


# ----------------------------------------------------------------------------------------------------
# expert-routing explorer (the MoE notebooks)
# ----------------------------------------------------------------------------------------------------
def _usage_array(usage) -> np.ndarray:
    array = np.asarray(usage.detach().cpu() if isinstance(usage, torch.Tensor) else usage, dtype=float)
    if array.ndim != 3:
        raise ValueError(f"expert usage must have shape (tasks, layers, experts), got {array.shape}")
    return array


def _shares(array: np.ndarray) -> np.ndarray:
    """Normalise the last axis to shares that sum to 1 (rows that are all zero stay zero)."""
    totals = array.sum(axis=-1, keepdims=True)
    return np.divide(array, totals, out=np.zeros_like(array), where=totals > 0)


def _usage_figure(shares: np.ndarray, task: int, layer: int, task_names: Sequence[str]):
    import matplotlib.pyplot as plt

    n_tasks, _, n_experts = shares.shape
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.35 * n_tasks + 2.4), gridspec_kw={"width_ratios": [1, 1.4]})
    left.bar(range(n_experts), shares[task, layer], color="tab:orange")
    left.set(xlabel="expert", ylabel="share of routing weight", title=f"{task_names[task]}, layer {layer}",
             xticks=range(n_experts), ylim=(0, 1))
    image = right.imshow(shares[:, layer, :], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    right.set(xlabel="expert", ylabel="task", title=f"layer {layer}: every task", xticks=range(n_experts),
              yticks=range(n_tasks), yticklabels=task_names)
    right.add_patch(plt.Rectangle((-0.5, task - 0.5), n_experts, 1, fill=False, edgecolor="white", linewidth=2))
    fig.colorbar(image, ax=right, label="share")
    fig.tight_layout()
    return _closed(fig)


def expert_usage_explorer(usage, *, task: int = 0, layer: int = 0, task_names: Sequence[str] | None = None,
                          normalize: bool = True, interactive: bool | None = None):
    """How a Mixture-of-Experts router spreads each task over the experts of each layer.

    Args:
        usage: ``(tasks, layers, experts)`` array or tensor: how much routing weight (or how many tokens)
            the images of task ``t`` sent to expert ``e`` of layer ``l``.
        task, layer: what the bar chart shows first.
        task_names: labels of the tasks (default ``task 0``, ``task 1``, ...).
        normalize: show each (task, layer) row as shares that sum to 1; False shows the values as given.
        interactive: True for widgets, False for a static figure, None to decide with :func:`use_widgets`.

    Returns:
        an ipywidgets ``VBox`` with task and layer sliders, or a matplotlib ``Figure``: left, one bar per
        expert for (``task``, ``layer``); right, a tasks x experts heatmap of ``layer``.
    """
    array = _usage_array(usage)
    shares = _shares(array) if normalize else array
    names = list(task_names) if task_names is not None else [f"task {t}" for t in range(array.shape[0])]
    if len(names) != array.shape[0]:
        raise ValueError(f"{len(names)} task names for {array.shape[0]} tasks")
    if not use_widgets(interactive):
        return _usage_figure(shares, task, layer, names)
    import ipywidgets as widgets

    inputs = {"task": widgets.IntSlider(value=task, min=0, max=array.shape[0] - 1, description="task"),
              "layer": widgets.IntSlider(value=layer, min=0, max=array.shape[1] - 1, description="layer")}
    return _live(inputs, lambda task, layer: _usage_figure(shares, task, layer, names))


# ----------------------------------------------------------------------------------------------------
# hyperparameter explorer (notebook 02)
# ----------------------------------------------------------------------------------------------------
def _sweep_figure(results: dict, values: Sequence, value, name: str, task_names: Sequence[str] | None):
    import matplotlib.pyplot as plt

    from . import metrics
    from .plots import accuracy_heatmap

    matrix = results[value]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    accuracy_heatmap(matrix, task_names, title=f"{name} = {value}", ax=left)
    left.tick_params(axis="y", rotation=0)
    labels = [str(v) for v in values]
    heights = [metrics.forgetting(results[v]) if v in results else 0.0 for v in values]
    bars = right.bar(labels, heights, color=["tab:red" if v == value else "tab:gray" for v in values])
    right.bar_label(bars, labels=[f"{h:.1f}" if v in results else "not run" for v, h in zip(values, heights)])
    right.set(xlabel=name, ylabel="forgetting (points)", title="forgetting (best minus final accuracy)")
    right.axhline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    return _closed(fig)


def hyperparameter_explorer(experiment: Callable[[object], np.ndarray], values: Sequence, *, name: str,
                            value=None, task_names: Sequence[str] | None = None, interactive: bool | None = None):
    """Rerun a small continual experiment for one hyperparameter and replot its forgetting.

    Args:
        experiment: ``experiment(v)`` runs the experiment with the hyperparameter set to ``v`` and returns
            its ``(T, T)`` accuracy matrix (in %). Each value is run at most once (results are kept).
        values: the values the slider offers, in order.
        name: the hyperparameter's name, for labels (``"epochs per step"``).
        value: the value shown first (default: the last one).
        task_names: the matrix's task names, for the heatmap.
        interactive: True for widgets, False for a static figure, None to decide with :func:`use_widgets`.

    Returns:
        an ipywidgets ``VBox`` whose slider reruns the experiment, or a matplotlib ``Figure`` after running
        every value: left, the accuracy matrix of ``value``; right, one forgetting bar per value
        (:func:`uniil_lib.metrics.forgetting`).
    """
    values = list(values)
    value = values[-1] if value is None else value
    if value not in values:
        raise ValueError(f"value {value!r} is not one of {values}")
    results: dict = {}

    def run(v) -> None:
        if v not in results:
            results[v] = np.asarray(experiment(v), dtype=float)

    if not use_widgets(interactive):
        for v in values:
            run(v)
        return _sweep_figure(results, values, value, name, task_names)
    import ipywidgets as widgets

    def draw(value):
        run(value)
        return _sweep_figure(results, values, value, name, task_names)

    slider = widgets.SelectionSlider(options=values, value=value, description=name[:12], continuous_update=False)
    note = widgets.Label(f"{name}: each new value reruns the experiment (about as long as one run)")
    box = _live({"value": slider}, draw, rows=[note, slider])
    box.results = results
    return box
