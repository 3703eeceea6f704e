"""A query vector from an uploaded ``.npy`` file, read without trusting its header.

``np.load`` allocates what the header declares before it reads a byte of data: a 100-byte file
declaring shape (10**12,) is a MemoryError, a complex or object dtype is accepted. Here the header
is parsed first (numpy's own parser, with its bound on the header's size) and the file is refused,
with one sentence, unless it holds exactly one real-valued vector of the index's dimension, its
data the size the header says; only then are the bytes viewed as numbers. No pickles, ever.
"""

from __future__ import annotations

import io

import numpy as np

from search.searcher import REAL_KINDS, VectorQueryError, check_vector


def vector_from_npy(data: bytes, dim: int, filename: str | None = None) -> np.ndarray:
    """The vector an .npy file holds, as float32 of ``dim`` values (VectorQueryError naming what is wrong)."""
    name = filename or "the .npy file"
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as error:
        raise VectorQueryError(f"{name}: not a .npy array ({str(error).splitlines()[0][:120]})") from None
    if dtype.kind not in REAL_KINDS or dtype.hasobject:
        raise VectorQueryError(f"{name}: holds {dtype.name} values; a query vector is real numbers (float or int)")
    if shape not in ((dim,), (1, dim)):
        shown = "x".join(str(side) for side in shape)[:60] or "a scalar"
        raise VectorQueryError(f"{name}: has shape {shown}; this index's vectors have {dim} dimensions")
    if len(data) - stream.tell() != dim * dtype.itemsize:
        raise VectorQueryError(f"{name}: its data is {len(data) - stream.tell():,} bytes where its header promises {dim * dtype.itemsize:,}")
    return check_vector(np.frombuffer(data, dtype=dtype, count=dim, offset=stream.tell()), dim)
