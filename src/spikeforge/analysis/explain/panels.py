"""PNG panels for ``spikeforge explain`` (matplotlib's object API and Agg canvas; no pyplot state is touched)."""

from __future__ import annotations

from pathlib import Path

import torch

PANEL = 1.5  # inches per panel


def _figure(rows: int, cols: int, extra_h: float = 0.7):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL * cols, (PANEL + 0.45) * rows + extra_h), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _image(x: torch.Tensor):
    """An image ``[C, H, W]`` in [0, 1], or binned event frames ``[T, C, H, W]`` (event counts summed over time and
    scaled to their maximum; two polarities as red = OFF, green = ON), as an array for ``imshow`` and its colormap."""
    img = x.detach().float().cpu()
    if img.dim() == 4:
        img = img.sum(0)
        img = img / img.max().clamp(min=1e-12)
        if img.shape[0] == 2:
            img = torch.stack([img[0], img[1], torch.zeros_like(img[0])])
    img = img.clamp(0, 1)
    if img.shape[0] == 1:
        return img[0].numpy(), "gray"
    return img.permute(1, 2, 0).numpy(), None


def _show(ax, x: torch.Tensor, heat: torch.Tensor | None = None, title: str = "", vmax: float = 1.0) -> None:
    img, cmap = _image(x)
    ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if heat is not None:
        ax.imshow(heat.numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=7)


def _r(rec: dict, key: str) -> str:
    r = (rec.get("consistency") or {}).get(key)
    return "\nr = n/a (constant map)" if r is None else f"\nr = {r:+.3f}"


def sample_figure(path: Path, i: int, x, x_adv, clean: dict, adv: dict | None, shown: list[int], rec: dict, *,
                  method: str, layer: str, spiking: bool, title: str, raw_scale: bool = False) -> None:
    """One image: [image | map at each shown t | sum over t | ANN Grad-CAM], clean row and (optional) FGSM row."""
    has_ann = "ann_map" in clean
    name = "SAM" if method == "sam" else "Grad-CAM"
    per_step = shown if spiking else []
    cols = 1 + len(per_step) + 1 + int(has_ann)
    rows = 1 + int(adv is not None)
    fig, axes = _figure(rows, cols)
    for row, (res, img, what) in enumerate([(clean, x, "clean"), (adv, x_adv, "FGSM")][:rows]):
        pred_key = "snn_pred" if spiking else "pred"
        if row:
            pred_key = "adv_" + pred_key
        head = f"{what}: label {rec['label']}\n{'SNN' if spiking else 'pred'} {rec[pred_key]}"
        if has_ann:
            head += f", ANN {rec[('adv_' if row else '') + 'ann_pred']}"
        _show(axes[row, 0], img[i], None, head)
        maps = res["maps"][:, i]
        vmax = float(maps.max()) if raw_scale and maps.numel() else 1.0
        for c, t in enumerate(per_step):
            _show(axes[row, 1 + c], img[i], maps[t], f"{name} t={t + 1}", vmax or 1.0)
        c = 1 + len(per_step)
        label = f"{name} sum over T" if spiking else name
        key = method if spiking else "gradcam"
        _show(axes[row, c], img[i], res["summed"][i], label + (_r(rec, key) if row else ""))
        if has_ann:
            _show(axes[row, c + 1], img[i], res["ann_map"][i], "ANN Grad-CAM" + (_r(rec, "ann_gradcam") if row else ""))
    fig.suptitle(f"{title}\ntest image #{rec['index']}", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)


def overview_figure(path: Path, x, x_adv, clean: dict, adv: dict | None, records: list[dict], *, method: str,
                    spiking: bool, title: str) -> None:
    """All images, one per row: [image | summed map | ANN Grad-CAM] and the same for the FGSM image beside it."""
    has_ann = "ann_map" in clean
    name = ("SAM" if method == "sam" else "Grad-CAM") + (" sum over T" if spiking else "")
    key = method if spiking else "gradcam"
    block = 2 + int(has_ann)
    cols = block * (1 + int(adv is not None))
    fig, axes = _figure(len(records), cols)
    for i, rec in enumerate(records):
        for b, (res, img, what) in enumerate([(clean, x, "clean"), (adv, x_adv, "FGSM")][: cols // block]):
            pre = "adv_" if b else ""
            pred = rec[pre + ("snn_pred" if spiking else "pred")]
            head = f"#{rec['index']} {what}\nlabel {rec['label']}, pred {pred}"
            _show(axes[i, b * block], img[i], None, head)
            _show(axes[i, b * block + 1], img[i], res["summed"][i], name + (_r(rec, key) if b else ""))
            if has_ann:
                _show(axes[i, b * block + 2], img[i], res["ann_map"][i],
                      f"ANN Grad-CAM\n(pred {rec[pre + 'ann_pred']})" + (_r(rec, "ann_gradcam") if b else ""))
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path)
