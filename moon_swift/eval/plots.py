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
