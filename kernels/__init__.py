"""Hand-written kernels: each module holds one op, its CPU @njit and CUDA twins side by side."""
