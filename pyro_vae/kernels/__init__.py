"""Compute kernels chosen by measurement: the float32 matrix products of the captured graphs
(:mod:`.matmul_choice`), oneDNN's where they are faster than torch's BLAS."""
