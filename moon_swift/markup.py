"""Markup of the structured product fields inside message text.

``<category>Apparel > Topwear > Tshirts</category>`` and ``<attributes>colour: Blue</attributes>``
are written by :mod:`moon_swift.data` from the record's fields and read by the ``moon`` template,
which turns them into token types (1 = category, 2 = attribute) for the guided MoE experts.
"""

CATEGORY_TAGS = ("<category>", "</category>")
ATTRIBUTE_TAGS = ("<attributes>", "</attributes>")
#: ``<group_id>SKU-123</group_id>``: the product's group (or product) id. It is not text the model
#: reads: the template removes it and passes the id on, so that ``moon_infonce`` never uses another
#: row of the same group as a negative.
GROUP_ID_TAGS = ("<group_id>", "</group_id>")
