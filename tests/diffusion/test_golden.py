"""IaN samples and losses from fixed seeds are bit-identical to the stored ones (CPU).

On a kind of CPU with its own record the comparison is bit for bit; on another kind, kernels
round differently, so it is against every record within float rounding (1e-5), which still
catches any change of results.
"""

import numpy as np

from golden import golden_path, golden_values, machine_key, recorded


def test_seeded_ian_samples_and_losses_are_bit_identical_to_the_stored_ones():
    values = golden_values()
    assert recorded(), "no golden records: run python tests/diffusion/golden.py"
    if golden_path().is_file():
        stored = np.load(golden_path())
        assert set(values) == set(stored.files)
        for name, value in values.items():
            np.testing.assert_array_equal(value, stored[name], err_msg=f"{name} on {machine_key()}")
        return
    for path in recorded():
        stored = np.load(path)
        assert set(values) == set(stored.files)
        for name, value in values.items():
            np.testing.assert_allclose(value, stored[name], rtol=0, atol=1e-5,
                                       err_msg=f"{name}: {machine_key()} against {path.name}")
