-- The plate readers' accuracy as officers measured it, one row per reader: reads
-- confirmed against reads corrected, unread plates an officer typed, and rejections
-- (the plate unreadable, the wrong vehicle in the photo, or another reason). The
-- production plate accuracy.
-- The desk's decisions (docs/desk.md), as of one moment: the query parameter as_of
-- (TIMESTAMP). Fines count as the desk queues them: the view fine_queue holds that rule,
-- fine_decisions the decision that stands (docs/warehouse.md, Views). In the BigQuery
-- console put CURRENT_TIMESTAMP() in its place.
WITH verified AS (
  SELECT fine_id, decision, decided_before
  FROM `{project}.{dataset}.fine_queue`
  WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)
),
-- Every decision recorded up to as_of, each once: fine_decisions keeps one row per
-- review_id, and the desk's export to fine_reviews is at-least-once (docs/desk.md).
decisions AS (
  SELECT *
  FROM `{project}.{dataset}.fine_decisions`
  WHERE decided_at <= @as_of
),
-- The decision that stands on each fine at as_of.
last_decisions AS (
  SELECT *
  FROM decisions
  WHERE stands_until IS NULL OR @as_of < stands_until
),
-- Each standing decision on a plate (not the closing of a withdrawn fine), with the
-- reader that read the plate of the revision decided on.
judged_reads AS (
  SELECT last_decisions.*, COALESCE(read_by.plate_reader, 'none') AS plate_reader
  FROM last_decisions
  LEFT JOIN (
    SELECT fine_id, revision, plate_reader
    FROM `{project}.{dataset}.fine_revisions`
    WHERE valid_from <= @as_of
    QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id, revision ORDER BY valid_from DESC) = 1
  ) AS read_by
    ON read_by.fine_id = last_decisions.fine_id AND read_by.revision = last_decisions.revision
  WHERE last_decisions.decision != 'acknowledged'
),
-- The notices issued up to as_of: one row per notice_id.
issued_notices AS (
  SELECT *
  FROM `{project}.{dataset}.notices`
  WHERE decided_at <= @as_of
)
SELECT
  plate_reader,
  COUNTIF(decision = 'confirmed') AS reads_confirmed,
  COUNTIF(decision = 'corrected' AND reader_plate IS NOT NULL) AS reads_corrected,
  COUNTIF(decision = 'corrected' AND reader_plate IS NULL) AS unread_typed,
  COUNTIF(decision = 'rejected' AND reason = 'plate_unreadable') AS rejected_unreadable,
  COUNTIF(decision = 'rejected' AND reason = 'wrong_vehicle') AS rejected_wrong_vehicle,
  COUNTIF(decision = 'rejected' AND reason NOT IN ('plate_unreadable', 'wrong_vehicle'))
    AS rejected_other,
  SAFE_DIVIDE(
    COUNTIF(decision = 'confirmed'),
    COUNTIF(decision IN ('confirmed', 'corrected') AND reader_plate IS NOT NULL)
  ) AS read_accuracy
FROM judged_reads
GROUP BY plate_reader
ORDER BY plate_reader
