"""PNG plots of an evaluation: Recall@K curves per retrieval direction, accuracy per category level."""

from __future__ import annotations

from pathlib import Path

from .report import column_name


def plot_results(per_model: dict[str, dict[str, float]], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    first = next(iter(per_model.values()))
    directions = sorted({key.rsplit("/", 1)[0] for key in first if key.startswith("retrieval/")})
    if directions:
        fig, axes = plt.subplots(1, len(directions), figsize=(4.5 * len(directions), 3.5), squeeze=False)
        for ax, direction in zip(axes[0], directions, strict=True):
            for model, metrics in per_model.items():
                ks = sorted(int(k.split("@")[1]) for k in metrics if k.startswith(f"{direction}/recall@"))
                ax.plot(ks, [metrics[f"{direction}/recall@{k}"] for k in ks], marker="o", label=column_name(model))
            ax.set(title=direction.split("/", 1)[1], xlabel="K", ylabel="Recall@K", ylim=(0, 1.02))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "recall_at_k.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    levels = sorted(key for key in first if key.startswith("classification/") and key.endswith("/accuracy"))
    if levels:
        fig, ax = plt.subplots(figsize=(1.6 * len(levels) + 2, 3.5))
        width = 0.8 / len(per_model)
        for i, (model, metrics) in enumerate(per_model.items()):
            xs = [x + i * width for x in range(len(levels))]
            ax.bar(xs, [metrics[level] for level in levels], width=width, label=column_name(model))
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(levels))], [lv.split("/")[1] for lv in levels])
        ax.set(title="zero-shot classification", ylabel="accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out_dir / "classification.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def plot_study_recall(summary: dict, baselines: dict[str, dict[str, float]], path: Path) -> Path:
    """Recall@K per retrieval task: each variant's mean over the seeds with its std as error bars; the
    thumbnail match and chance dashed. ``summary``: variant -> metric -> :class:`~moon_swift.eval.seeds.Spread`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(summary.values()))
    tasks = list(dict.fromkeys(key.rsplit("/", 1)[0] for key in first if key.startswith("retrieval/")))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        ks = sorted(int(k.split("@")[1]) for k in first if k.startswith(f"{task}/recall@"))
        for name, metrics in summary.items():
            spreads = [metrics[f"{task}/recall@{k}"] for k in ks]
            errors = [0.0 if s.std != s.std else s.std for s in spreads]  # nan (one seed): no bar
            ax.errorbar(ks, [s.mean for s in spreads], yerr=errors, marker="o", capsize=3, label=name)
        for name, style in (("thumbnail match", "--"), ("chance", ":")):
            values = [baselines.get(name, {}).get(f"{task}/recall@{k}") for k in ks]
            if all(v is not None for v in values):
                ax.plot(ks, values, style, color="grey", label=name)
        ax.set(title=task.split("/", 1)[1], xlabel="K", ylabel="Recall@K", ylim=(0, 1.02), xticks=ks)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_photo_queries(data, boxes: Path, tops: dict[str, list[list[int]]], path: Path, queries: int = 4) -> Path:
    """A few held-out photo queries: the photo with its detected box and the top-5 products of the first
    variant, the crop and the top-5 of the second; the right product framed in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..core.images import read_image
    from ..detection.box_index import BoxIndex
    from ..detection.selection import crop

    store = BoxIndex(boxes)
    photos = [q for q in data.queries if q.task == "photo"][:queries]
    names = list(tops)
    fig, axes = plt.subplots(len(photos) * len(names), 6, figsize=(11, 2.0 * len(photos) * len(names)), squeeze=False)
    for qi, query in enumerate(photos):
        loaded = read_image(query.image)
        selection = store.lookup_sha256(loaded.sha256) if loaded.sha256 else None
        for vi, name in enumerate(names):
            row = axes[qi * len(names) + vi]
            if vi == 0 or selection is None:
                row[0].imshow(loaded.image)
                for x1, y1, x2, y2 in selection.boxes if selection is not None else []:
                    row[0].add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", lw=1.5))
                row[0].set_title("query, detected box", fontsize=7)
            else:
                row[0].imshow(crop(loaded.image, selection)[0])
                row[0].set_title("its crop (MOON sees it too)", fontsize=7)
            row[0].set_ylabel(name, fontsize=8)
            for rank, position in enumerate(tops[name][qi][:5], start=1):
                product = data.val[position]
                row[rank].imshow(read_image(product.images[0]).image)
                hit = product.product_id == query.product_id
                row[rank].set_title(f"{rank}. {product.category_path[-1] if product.category_path else ''}",
                                    fontsize=7, color="green" if hit else "black")  # fmt: skip
                if hit:
                    for spine in row[rank].spines.values():
                        spine.set(color="green", linewidth=3)
            for ax in row:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
