"""Weights on the wire: one flat array per dtype instead of one Flower object per tensor.

Flower sends every ``Array`` of a message as its own object, each pushed and pulled over HTTP on its own: a
resnet18 state_dict is about 200 of them per message. Packed, it is one float32 array (and one int64 array for
BatchNorm's counters), which Flower cuts into a few 5 MiB chunks. The names, shapes and dtypes travel beside it in
a ``ConfigRecord``, so the receiver needs no model to unpack.

Packing is lossless at ``fp32``. ``fp16`` sends floating-point tensors as half precision (half the bytes); the
receiver turns them back into their own dtype, so every strategy still aggregates in float32. The server packs
what it sends after the strategy has configured a round and unpacks the sites' replies before any strategy (or
differential-privacy wrapper) sees them: what Flower's strategies aggregate is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

ARRAYS_KEY = "arrays"  # where Flower's strategies put (and look for) the weights
CONFIG_KEY = "config"  # the ConfigRecord Flower's strategies send with each round
PREFIX = "wire-"  # the layout's keys in a message's ConfigRecord
PRECISIONS = ("fp32", "fp16")


class WireError(ValueError):
    """A packed message whose layout does not describe its arrays."""


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the tensors in a packed ``ArrayRecord``, in packing order.

    It travels as ``wire-*`` keys inside a message's existing ``ConfigRecord``, not a record of its own: Flower's
    ``adaptiveclipping_mod`` refuses a message with more than one ``ConfigRecord``.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    precision: str = "fp32"

    def to_config(self) -> dict[str, list[str] | list[int] | str]:
        """The ``wire-*`` entries (lists of str and int; shapes flattened with their ranks)."""
        return {
            f"{PREFIX}names": list(self.names),
            f"{PREFIX}dtypes": list(self.dtypes),
            f"{PREFIX}ranks": [len(shape) for shape in self.shapes],
            f"{PREFIX}dims": [d for shape in self.shapes for d in shape] or [0],
            f"{PREFIX}precision": self.precision,
        }

    @classmethod
    def from_config(cls, record: Mapping[str, object]) -> Layout:
        """Read :meth:`to_config`'s entries back.

        Raises
        ------
        WireError
            If the entries are missing or do not describe a consistent layout.
        """
        try:
            names = [str(n) for n in record[f"{PREFIX}names"]]  # type: ignore[attr-defined]
            dtypes = [str(d) for d in record[f"{PREFIX}dtypes"]]  # type: ignore[attr-defined]
            ranks = [int(r) for r in record[f"{PREFIX}ranks"]]  # type: ignore[attr-defined]
            dims = [int(d) for d in record[f"{PREFIX}dims"]]  # type: ignore[attr-defined]
            precision = str(record[f"{PREFIX}precision"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(f"the weights' layout is incomplete ({exc})") from None
        if not len(names) == len(dtypes) == len(ranks) or sum(ranks) > len(dims) or precision not in PRECISIONS:
            raise WireError("the weights' layout does not add up (names, dtypes and shapes differ in number)")
        shapes, at = [], 0
        for rank in ranks:
            shapes.append(tuple(dims[at : at + rank]))
            at += rank
        return cls(tuple(names), tuple(shapes), tuple(dtypes), precision)


def _wire_dtype(dtype: np.dtype, precision: str) -> np.dtype:
    return np.dtype(np.float16) if precision == "fp16" and np.issubdtype(dtype, np.floating) else dtype


def pack(
    arrays: Mapping[str, np.ndarray], precision: str = "fp32", order: Iterable[str] | None = None
) -> tuple[ArrayRecord, Layout]:
    """One flat array per dtype, and the layout that unpacks it.

    Parameters
    ----------
    arrays
        Named tensors as numpy arrays (a state_dict's values through ``.numpy()``).
    precision
        ``fp32`` (lossless) or ``fp16`` (floating-point tensors as half precision).
    order
        The names in the order to pack them; a site replies in the order it received (Flower's differential
        privacy mods compare the reply with the request array by array). By default, ``arrays``' own order.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"wire precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    first = [n for n in order if n in arrays] if order is not None else []
    names = first + [n for n in arrays if n not in set(first)]
    values = [np.asarray(arrays[name]) for name in names]
    groups: dict[str, list[np.ndarray]] = {}
    for value in values:
        groups.setdefault(value.dtype.str, []).append(value.ravel().astype(_wire_dtype(value.dtype, precision)))
    layout = Layout(
        names=tuple(names),
        shapes=tuple(tuple(int(d) for d in value.shape) for value in values),
        dtypes=tuple(value.dtype.str for value in values),
        precision=precision,
    )
    flat = {dtype: Array.from_numpy_ndarray(np.concatenate(parts)) for dtype, parts in groups.items()}
    return ArrayRecord(array_dict=flat), layout


def unpack(record: ArrayRecord, layout: Layout) -> dict[str, np.ndarray]:
    """The named tensors of a packed ``ArrayRecord``, each in its own dtype and shape.

    Raises
    ------
    WireError
        If the arrays do not hold what the layout says.
    """
    flat = {dtype: record[dtype].numpy().ravel() for dtype in record}
    offsets = dict.fromkeys(flat, 0)
    out: dict[str, np.ndarray] = {}
    for name, shape, dtype in zip(layout.names, layout.shapes, layout.dtypes, strict=True):
        if dtype not in flat:
            raise WireError(f"the weights' layout names {name!r} as {dtype}, but no {dtype} array came")
        size = int(np.prod(shape, dtype=np.int64))
        start = offsets[dtype]
        part = flat[dtype][start : start + size]
        if part.size != size:
            raise WireError(f"the {dtype} array ends before {name!r} (the layout and the arrays differ)")
        out[name] = part.astype(np.dtype(dtype), copy=False).reshape(shape)
        offsets[dtype] = start + size
    if any(offsets[d] != flat[d].size for d in flat):
        raise WireError("the arrays hold more numbers than the weights' layout names")
    return out


def layout_of(content: RecordDict) -> Layout | None:
    """The layout of ``content``'s packed weights, or None when they travel one array per tensor.

    Raises
    ------
    WireError
        If a layout is there but incomplete.
    """
    for record in content.config_records.values():
        if f"{PREFIX}names" in record:
            return Layout.from_config(record)
    return None


def pack_content(content: RecordDict, arrays: ArrayRecord, layout: Layout, config_key: str = CONFIG_KEY) -> None:
    """Put packed ``arrays`` into ``content`` and the layout into a copy of its ``config_key`` ConfigRecord.

    A copy: Flower hands a strategy the same ConfigRecord every round, and a layout left in it would describe
    the next round's weights before they are packed.
    """
    content[ARRAYS_KEY] = arrays
    content[config_key] = ConfigRecord({**(content.config_records.get(config_key) or {}), **layout.to_config()})


def unpack_content(content: RecordDict) -> None:
    """Replace packed weights by one ``Array`` per tensor and drop the layout's keys, in place.

    Raises
    ------
    WireError
        If the layout does not describe the arrays.
    """
    layout = layout_of(content)
    if layout is None:
        return
    tensors = unpack(content[ARRAYS_KEY], layout)
    content[ARRAYS_KEY] = ArrayRecord(array_dict={k: Array.from_numpy_ndarray(v) for k, v in tensors.items()})
    for record in content.config_records.values():
        for key in [k for k in record if k.startswith(PREFIX)]:
            del record[key]
