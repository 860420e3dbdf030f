"""Small HTML and chart helpers the report pages share: escaping, number formats, embedded PNGs.

matplotlib is imported only inside the chart helpers, so the report's text parts stay light.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value: Any, spec: str = ".3g", suffix: str = "") -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    return f"{value:{spec}}{suffix}"


def percent(value: Any, digits: int = 1) -> str:
    return number(value * 100 if isinstance(value, (int, float)) else None, f".{digits}f", "%")


def size(size_bytes: Any) -> str:
    if not isinstance(size_bytes, (int, float)):
        return "–"
    if size_bytes >= 2**20:
        return f"{size_bytes / 2**20:.2f} MB"
    return f"{size_bytes / 1024:.1f} KB"


def png(figure: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def new_figure(width: float = 6.0, height: float = 4.0) -> Any:
    # Figure + Agg canvas directly (no pyplot): no global backend switch, no GUI.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.add_subplot(1, 1, 1)


def img(data: str | None, caption: str) -> str:
    if not data:
        return ""
    return f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}"><figcaption>{escape(caption)}</figcaption></figure>'
