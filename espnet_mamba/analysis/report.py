"""Per-layer results as TSV tables (a ``layer`` column, then one column per measure) and as
line plots of measure against layer (PNG, matplotlib's Agg backend)."""

from pathlib import Path
from typing import Dict, List, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

_PLAIN_NUMBER = FuncFormatter(lambda value, _: f"{value:g}")

LayerTable = Dict[str, List[float]]  # measure -> one value per layer, layer 0 first


def write_layer_table(path, columns: Mapping[str, Sequence[float]]) -> None:
    """Write ``layer<TAB>measure...`` rows, one per layer."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"every measure needs one value per layer, got lengths {sorted(lengths)}")
    names = list(columns)
    rows = ["\t".join(["layer"] + names)]
    for layer in range(lengths.pop()):
        rows.append("\t".join([str(layer)] + [f"{columns[name][layer]:.6g}" for name in names]))
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")


def read_layer_table(path) -> LayerTable:
    """The measures of a table written by :func:`write_layer_table`."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].split("\t")[0] != "layer":
        raise ValueError(f"{path}:1: expected a header starting with 'layer'")
    names = lines[0].split("\t")[1:]
    table: LayerTable = {name: [] for name in names}
    for lineno, line in enumerate(lines[1:], 2):
        fields = line.split("\t")
        if len(fields) != len(names) + 1 or fields[0] != str(lineno - 2):
            raise ValueError(f"{path}:{lineno}: expected layer {lineno - 2} and {len(names)} values, got {line!r}")
        try:
            for name, value in zip(names, fields[1:], strict=True):
                table[name].append(float(value))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: non-numeric value in {line!r}") from None
    return table


def plot_layers(
    panels: Mapping[str, Mapping[str, Sequence[float]]], path, title: str = "", log_y: bool = False
) -> None:
    """One subplot per panel, one line per curve, value against layer.

    panels: panel title -> {curve label: one value per layer}.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for label, values in curves.items():
            ax.plot(range(len(values)), values, marker="o", markersize=3, label=label)
        ax.set_title(panel)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_y:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(_PLAIN_NUMBER)
            ax.yaxis.set_minor_formatter(_PLAIN_NUMBER)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_tables(tables: Mapping[str, LayerTable], measures: Sequence[str]) -> Dict[str, Dict[str, List[float]]]:
    """Panels for :func:`plot_layers`: per measure, one curve per model (name -> table)."""
    for name, table in tables.items():
        missing = [m for m in measures if m not in table]
        if missing:
            raise ValueError(f"table {name!r} has no column {missing[0]!r} (columns: {', '.join(table)})")
    return {measure: {name: table[measure] for name, table in tables.items()} for measure in measures}
