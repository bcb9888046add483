"""The conv blocks' arithmetic: the side after n blocks, the deepest stack, and the smallest image agree."""

from __future__ import annotations

from mammo.model.feature_maps import feature_size, max_blocks, min_image_size


def test_the_side_shrinks_by_a_valid_conv_then_a_pool_per_block() -> None:
    assert [feature_size(150, blocks) for blocks in range(6)] == [150, 74, 36, 17, 7, 2]
    assert feature_size(46, 4) == 1 and feature_size(45, 4) == 0


def test_the_deepest_stack_and_the_smallest_image_are_inverses() -> None:
    for blocks in range(8):
        smallest = min_image_size(blocks)
        assert feature_size(smallest, blocks) == 1 and feature_size(smallest - 1, blocks) < 1
        assert max_blocks(smallest) == blocks and max_blocks(smallest - 1) == blocks - 1 if blocks else True
    assert min_image_size(4) == 46 and max_blocks(150) == 5 and max_blocks(32) == 3
