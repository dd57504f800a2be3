import os

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("tests/cudasim runs only with NUMBA_ENABLE_CUDASIM=1", allow_module_level=True)
