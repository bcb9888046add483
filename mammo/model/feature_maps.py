"""The conv blocks' arithmetic: how a feature map shrinks through 3×3 'valid' conv + 2×2 pool blocks.

Every variant and every searched architecture stacks such blocks (−2 per conv, ÷2 per pool, floor),
so the builder's check, the search space's depth cap and the error messages all read from here.
Pure: no imports beyond the standard library.
"""

from __future__ import annotations

KERNEL_SIZE, POOL_SIZE = 3, 2


def feature_size(image_size: int, blocks: int) -> int:
    """Side of the last feature map after `blocks` blocks; < 1 when the image is too small for them."""
    side = image_size
    for _ in range(blocks):
        side = (side - KERNEL_SIZE + 1) // POOL_SIZE
    return side


def max_blocks(image_size: int) -> int:
    """How many blocks an image of this size survives (the feature map stays ≥ 1×1)."""
    blocks = 0
    while feature_size(image_size, blocks + 1) >= 1:
        blocks += 1
    return blocks


def min_image_size(blocks: int) -> int:
    """The smallest image side that `blocks` blocks can process (inverse of `max_blocks`)."""
    size = 1
    for _ in range(blocks):
        size = size * POOL_SIZE + KERNEL_SIZE - 1
    return size
