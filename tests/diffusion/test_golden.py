"""IaN samples and losses from fixed seeds are bit-identical to the stored ones (CPU)."""

import numpy as np

from golden import GOLDEN, golden_values


def test_seeded_ian_samples_and_losses_are_bit_identical_to_the_stored_ones():
    stored = np.load(GOLDEN)
    values = golden_values()
    assert set(values) == set(stored.files)
    for name, value in values.items():
        np.testing.assert_array_equal(value, stored[name], err_msg=name)
