"""DENSIFY: a TFLite sparse tensor (the TACO-style format of `SparsityParameters`) back to its dense array.

A dense tensor of shape (d0, ..., dn-1), optionally cut into k-dimensional blocks, is traversed in
`traversal_order` (n + k dimensions: the block-grid dimensions first, then the dimensions inside a block,
`block_map` telling which original dimension each block dimension subdivides). Each traversed dimension is
DENSE (every coordinate 0 .. dense_size - 1 is stored) or SPARSE_CSR (for each element of the previous
level, `array_segments[p] : array_segments[p + 1]` delimits its stored coordinates in `array_indices`). The
stored values come in that depth-first order. This is `FormatConverter::SparseToDense` of TFLite
(`tensorflow/lite/kernels/internal/utils/sparsity_format_converter.cc`), level by level in NumPy.
"""
import numpy as np

DENSE, SPARSE_CSR = 0, 1


def densify(values, shape, sparsity):
    """The dense array of `shape` whose stored (non-zero) elements are `values`, per `sparsity` (the dict
    schema.read_model gives: traversal_order, block_map, dim_metadata)."""
    order, block_map, dims = sparsity["traversal_order"], sparsity["block_map"], sparsity["dim_metadata"]
    n = len(shape)
    if len(order) != len(dims) or sorted(order) != list(range(len(order))) or len(order) != n + len(block_map):
        raise ValueError(f"sparsity: traversal_order {order} does not fit a tensor of rank {n} with "
                         f"{len(block_map)} block dimension(s) and {len(dims)} dimension metadata")
    coords = np.zeros((1, 0), np.int64)          # one row per element reached so far, one column per level
    parent = np.zeros(1, np.int64)               # each row's position in its level (CSR's "previous index")
    for level, meta in enumerate(dims):
        if meta["format"] == DENSE:
            size = int(meta["dense_size"])
            child = np.tile(np.arange(size, dtype=np.int64), len(parent))
            coords = np.repeat(coords, size, axis=0)
            parent = np.repeat(parent * size, size) + child
        elif meta["format"] == SPARSE_CSR:
            segments, indices = meta["array_segments"], meta["array_indices"]
            if segments is None or indices is None or parent.size and parent.max() + 1 >= segments.size:
                raise ValueError(f"sparsity: level {level} is SPARSE_CSR without segments for every element")
            starts, counts = segments[parent], segments[parent + 1] - segments[parent]
            position = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            coords = np.repeat(coords, counts, axis=0)
            child, parent = indices[position], position
        else:
            raise ValueError(f"sparsity: level {level} has format {meta['format']}; expected DENSE or SPARSE_CSR")
        coords = np.concatenate([coords, child[:, None]], axis=1)
    if coords.shape[0] != values.size:
        raise ValueError(f"sparsity: the format reaches {coords.shape[0]} elements but the buffer holds {values.size}")
    index = [None] * n
    for level in range(n):
        index[order[level]] = coords[:, level]
    for level in range(n, n + len(block_map)):
        block = order[level] - n
        dim = block_map[block]
        index[dim] = index[dim] * int(dims[n + block]["dense_size"]) + coords[:, level]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(index)] = values.reshape(-1)
    return dense
