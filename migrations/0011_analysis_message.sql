-- hotdata state schema, version 0011: the message an analysis was posted as, so that the
-- Home tab links to its thread.
ALTER TABLE hotdata.analyses ADD COLUMN message_ts text;
