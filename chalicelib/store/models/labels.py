"""The label index: one item per (label pair, node), so a selector reads one pair's partition
instead of every node (store/label_index.py keeps it in step with the node items)."""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import BooleanAttribute, MapAttribute, UnicodeAttribute

from chalicelib.store.models.base import FleetrunModel, _Meta


class LabelItem(FleetrunModel):
    """`LABEL#<part(key)>#<part(value)>` / `<node id>`: the node carries this pair. Holds the
    node's whole label map and whether selectors may pick it, so a resolution filters on the
    items it reads and never reads the node items."""

    class Meta(_Meta):
        pass

    node_id = UnicodeAttribute()
    labels = MapAttribute[str, Any](default=dict)
    #: False while the node is in maintenance (domain/selectors.py `selectable`)
    selectable = BooleanAttribute(default=True)
