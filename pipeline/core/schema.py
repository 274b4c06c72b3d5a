"""The canonical columns every stage can rely on, and the accounting columns filters set."""

import pyarrow as pa

ID = "id"
TEXT = "text"
SOURCE = "source"
DOMAIN = "domain"

# A filter marks rows instead of deleting them, so the runner can account for every row.
KEEP = "keep"
DROP_REASON = "drop_reason"

# Added by the runner, only for stages that ask for it (`Stage.row_positions`), and removed
# after them: each row's position in its shard. With the shard's name it addresses one row,
# whatever its id, so a global pass can pick exactly one row even among rows sharing an id.
ROW = "_row"

# In a stage's checkpoint (and an ingest shard read in place): each stored row's position in the
# rows it was computed from.
POS = "_pos"

# Added by the runner to rejected rows: which stage dropped them.
DROP_STAGE = "drop_stage"
# Rejected rows only: the values of the columns the dropping stage read and wrote (its scores), as JSON.
DROP_DETAIL = "drop_detail"

# Added to the final output.
WEIGHT = "weight"
GROUP = "group"

CANONICAL = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(TEXT, pa.string()),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(DOMAIN, pa.string(), nullable=False),
    ]
)
