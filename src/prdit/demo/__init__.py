"""``prdit demo``: the whole method end to end on synthetic phantoms, with a visual report."""
