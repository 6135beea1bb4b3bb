"""What :func:`~rnnkit.explain.explain` finds, and how it reads.

:class:`Explanation` holds the findings (arguments, equations, tensors, axes,
parameters, notes, problems) as plain data; ``str()`` renders them as aligned
text, ``rich`` as tables, :meth:`Explanation.to_dict` as JSON-ready data.
Problems come first in both renderings: whoever checks a shape sees the
verdict before the rest.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from rnnkit.explain.config import LayerConfig, is_shape
from rnnkit.explain.wording import TEXT

Size = int | str
"""The size of one axis: a number, or the axis symbol ('L', 'N') when the input does not say."""


@dataclass(frozen=True)
class TensorShape:
    """One tensor going into or out of the layer."""

    name: str                 # input, h_0, c_0, output, h_n, c_n (cells: h_1, c_1 out)
    axes: tuple[str, ...]     # axis symbols, e.g. ('L', 'N', 'H_in')
    sizes: tuple[Size, ...]   # e.g. (3, 2, 5), or ('L', 'N', 5) without an input shape
    meaning: str


@dataclass(frozen=True)
class ParameterShape:
    """One parameter of the layer, under its ``torch.nn`` name."""

    name: str
    shape: tuple[int, ...]
    meaning: str              # the matrices it stacks, and where it sits

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


@dataclass(frozen=True)
class Problem:
    """Something that stops the layer from being built or from taking the input."""

    subject: str              # the argument at fault: 'hidden_size', 'input_shape', ...
    message: str              # what is wrong and what was expected, in the explanation's language

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, repr=False)
class Explanation:
    """What :func:`explain` found; ``print`` it, or read its fields.

    Without problems, every field is complete. A problem with the arguments
    leaves only ``arguments`` and ``problems`` (the layer could not be
    built); a problem with the input shape leaves the tensors in symbolic
    form, which is what the layer expects.
    """

    config: LayerConfig
    input_shape: Any
    lengths: Any              # the forward's lengths= as given: None, True or the lengths
    return_states: Any        # the forward's return_states= as given
    lang: str
    title: str
    arguments: tuple[tuple[str, Any, str], ...]   # (name, value, meaning)
    equations: tuple[str, ...]
    tensors: tuple[TensorShape, ...]
    axes: tuple[tuple[str, Size, str], ...]       # (symbol, size, meaning)
    parameters: tuple[ParameterShape, ...]
    notes: tuple[str, ...]
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether the layer can be built and takes the input."""
        return not self.problems

    @property
    def shapes(self) -> dict[str, tuple[Size, ...]]:
        """Each tensor's shape by name: ``{'input': (3, 2, 5), 'h_0': (2, 2, 8), ...}``."""
        return {t.name: t.sizes for t in self.tensors}

    @property
    def num_parameters(self) -> int:
        """``sum(p.numel() for p in layer.parameters())``."""
        return sum(p.numel for p in self.parameters)

    def to_dict(self) -> dict[str, Any]:
        """Everything, as JSON-ready plain data."""
        return {
            "layer": self.config.class_name,
            "arguments": self.config.arguments(),
            "input_shape": list(self.input_shape) if is_shape(self.input_shape) else self.input_shape,
            "lengths": self.lengths,
            "return_states": self.return_states,
            "lang": self.lang,
            "meanings": {name: meaning for name, _, meaning in self.arguments},
            "equations": list(self.equations),
            "shapes": {
                t.name: {"shape": list(t.sizes), "axes": list(t.axes), "meaning": t.meaning}
                for t in self.tensors
            },
            "axes": {symbol: {"size": size, "meaning": m} for symbol, size, m in self.axes},
            "parameters": [
                {"name": p.name, "shape": list(p.shape), "numel": p.numel, "meaning": p.meaning}
                for p in self.parameters
            ],
            "num_parameters": self.num_parameters,
            "notes": list(self.notes),
            "problems": [{"subject": p.subject, "message": p.message} for p in self.problems],
        }

    def _sections(self) -> list[_Section]:
        """The explanation as titled tables, for both the plain and the rich
        rendering: the problems first, so that the verdict is the first thing read."""
        text = TEXT[self.lang]
        sections = [
            _Section(text["heading.problems"], [(f"- {p}",) for p in self.problems], style="red"),
            _Section(text["heading.arguments"], [(f"{n}={v!r}", m) for n, v, m in self.arguments]),
            _Section(text["heading.cell" if self.config.cell_only else "heading.recurrence"],
                     [(line,) for line in self.equations]),
        ]
        if self.tensors:
            misfit = any(p.subject == "input_shape" for p in self.problems)
            sections.append(_Section(
                text["heading.expected" if misfit else "heading.shapes"],
                [(t.name, format_shape(t.sizes), format_shape(t.axes), t.meaning)
                 for t in self.tensors],
                header=text["header.shapes"],
            ))
            sections.append(_Section(
                text["heading.axes"],
                [(symbol, text["any"] if isinstance(size, str) else size, meaning)
                 for symbol, size, meaning in self.axes],
            ))
        if self.parameters:
            sections.append(_Section(
                text["heading.parameters"],
                [(p.name, format_shape(p.shape), p.numel, p.meaning) for p in self.parameters]
                + [(text["total"], "", self.num_parameters, "")],
                header=text["header.parameters"],
            ))
        if self.notes:
            sections.append(_Section(text["heading.notes"], [(f"- {n}",) for n in self.notes]))
        return [section for section in sections if section.rows]

    def __str__(self) -> str:
        lines = [self.title]
        for section in self._sections():
            lines += ["", section.title]
            rows = ([section.header] if section.header else []) + section.rows
            lines += _plain_table(rows)
        return "\n".join(lines)

    def __rich__(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        parts: list[Any] = [Text(self.title, style="bold")]
        for section in self._sections():
            table = Table(
                title=section.title, title_justify="left", title_style="bold cyan",
                box=None, show_header=section.header is not None, header_style="dim",
                padding=(0, 1),
            )
            width = len(section.rows[0])
            for column in range(width):
                numeric = any(isinstance(row[column], int) for row in section.rows)
                table.add_column(
                    section.header[column] if section.header else None,
                    justify="right" if numeric else "left",
                    style="bold" if column == 0 and width > 1 else None,
                )
            for row in section.rows:
                table.add_row(*(str(cell) for cell in row), style=section.style or None)
            parts += [Text(""), table]
        return Group(*parts)

    def __repr__(self) -> str:
        return (
            f"<Explanation of {self.config.signature()}: {self.num_parameters} parameters, "
            f"{len(self.problems)} problem(s); print() it to read it>"
        )


@dataclass(frozen=True)
class _Section:
    title: str
    rows: list[tuple[Any, ...]]
    header: tuple[str, ...] | None = None
    style: str = ""



# -- plain text ------------------------------------------------------------------


def format_shape(sizes: Any) -> str:
    """``(3, 2, 5)``, ``(8,)``, ``(L, N, H_in)``."""
    items = [str(size) for size in sizes]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def width(s: str) -> int:
    """Columns ``s`` takes in a terminal: two for each wide (CJK) character."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _plain_table(rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as aligned, two-space-indented lines; numbers right-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    columns = max(len(row) for row in rows)
    widths = [max((width(r[c]) for r in cells if c < len(r)), default=0) for c in range(columns)]
    numeric = [any(isinstance(row[c], int) for row in rows if c < len(row)) for c in range(columns)]
    lines = []
    for row in cells:
        padded = []
        for c, cell in enumerate(row):
            pad = " " * (widths[c] - width(cell))
            last = c == len(row) - 1
            padded.append(pad + cell if numeric[c] else cell + ("" if last else pad))
        lines.append(("  " + "  ".join(padded)).rstrip())
    return lines
