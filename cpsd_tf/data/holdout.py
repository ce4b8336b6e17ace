"""A held-out model-selection split drawn from a converted split (`data coco|nuswide|csv --holdout N`).

COCO and NUS-WIDE ship no validation split, and model selection must never happen on the reported split:
the converters can hold out N random images of the training split as another split (`val` by default),
written together with the rest so that the two never both exist half-done or overlap.

The draw ranks images by a seeded SHA-256 of their image id (ties, for repeated ids, by position), so a
seed gives the same held-out set on every platform and Python/NumPy version. Both parts keep the source
order, so records stay deterministic.
"""

import dataclasses
import hashlib
from typing import Sequence

from cpsd_tf.data import records
from cpsd_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class Holdout:
    """Hold out `count` random images of a split as split `split`.

    Args:
        count: int, images to hold out: at least 1 and fewer than the source split has.
        split: str, name of the held-out split. Defaults to "val".
        seed: int, seed of the draw (>= 0). Defaults to 0.

    Example:
        rest, held = Holdout(5000).split_items(items, "train", "instances_train2014.json")
    """

    count: int
    split: str = "val"
    seed: int = 0

    def check(self, taken: Sequence[str], what: str):
        """Fail before any parsing on a bad split name or seed.

        Args:
            taken: list of str, the split names the converter writes besides the held-out one.
            what: str, how to name `taken` in the message, e.g. "--split 'train'".
        """
        if not records.SPLIT_NAME.match(self.split):
            raise UserError(f"--holdout-split '{self.split}' is invalid: use letters, digits and '_'")
        if self.split in taken:
            raise UserError(f"--holdout-split '{self.split}' must differ from {what}")
        if self.seed < 0:
            raise UserError(f"--seed {self.seed}: must be >= 0")

    def split_items(self, items: Sequence, source_split: str, source) -> tuple:
        """Return (rest, held): the items split by the seeded draw, each in source order.

        Args:
            items: list of `sources.Item`, the source split after filtering.
            source_split: str, the name of the split the images are drawn from (for messages).
            source: str or Path, the file listing the images (for messages).

        Raises:
            UserError: `count` is below 1 or not below the number of items.
        """
        n = len(items)
        if not 1 <= self.count < n:
            raise UserError(
                f"--holdout {self.count}: must be at least 1 and less than the {n} images of split "
                f"'{source_split}' ({source})"
            )
        ranked = sorted(range(n), key=lambda i: (self._rank(items[i].image_id), i))
        held = set(ranked[: self.count])
        return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]

    def _rank(self, image_id: str) -> bytes:
        return hashlib.sha256(f"{self.seed}\0{image_id}".encode("utf-8")).digest()
