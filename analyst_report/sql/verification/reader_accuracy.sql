-- The plate readers' accuracy as officers measured it, one row per reader: reads
-- confirmed against reads corrected, unread plates an officer typed, and rejections
-- (the plate unreadable, or another reason). The production plate accuracy.
-- The desk's decisions (docs/desk.md), as of one moment: the query parameter as_of
-- (TIMESTAMP). Fines count as the desk queues them: the latest revision per fine_id,
-- ticketed, not withdrawn, not merged into another traversal (docs/report.md). In the
-- BigQuery console put CURRENT_TIMESTAMP() in its place.
WITH fine_rows AS (
  SELECT *
  FROM `{project}.{dataset}.fines`
  WHERE processed_at <= @as_of
),
latest_fines AS (
  SELECT *
  FROM fine_rows
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY revision DESC, processed_at DESC) = 1
),
live_fines AS (
  SELECT *
  FROM latest_fines
  WHERE fine_id NOT IN (
    SELECT superseded_id FROM latest_fines, UNNEST(supersedes) AS superseded_id
  )
  AND is_ticketed AND withdrawn_reason IS NULL
),
-- Every decision recorded up to as_of, each once: the desk's export to fine_reviews is
-- at-least-once (docs/desk.md, Decisions, notices and the outbox).
decisions AS (
  SELECT *
  FROM `{project}.{dataset}.fine_reviews`
  WHERE decided_at <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY review_id ORDER BY decided_at) = 1
),
-- The decision that stands on each fine: its latest.
last_decisions AS (
  SELECT *
  FROM decisions
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY revision DESC, decided_at DESC, review_id DESC) = 1
),
-- Each live fine with the decision on its current revision (NULL: pending); a decision
-- on an older revision means the fine changed since and awaits the desk again.
verified AS (
  SELECT
    live_fines.fine_id,
    IF(last_decisions.revision = live_fines.revision, last_decisions.decision, NULL) AS decision,
    last_decisions.fine_id IS NOT NULL AS decided_before
  FROM live_fines
  LEFT JOIN last_decisions ON last_decisions.fine_id = live_fines.fine_id
),
-- Each standing decision on a plate (not the closing of a withdrawn fine), with the
-- reader that read the plate of the revision decided on.
judged_reads AS (
  SELECT last_decisions.*, COALESCE(read_by.plate_reader, 'none') AS plate_reader
  FROM last_decisions
  LEFT JOIN (
    SELECT fine_id, revision, plate_reader
    FROM fine_rows
    QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id, revision ORDER BY processed_at DESC) = 1
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
  COUNTIF(decision = 'rejected' AND reason != 'plate_unreadable') AS rejected_other,
  SAFE_DIVIDE(
    COUNTIF(decision = 'confirmed'),
    COUNTIF(decision IN ('confirmed', 'corrected') AND reader_plate IS NOT NULL)
  ) AS read_accuracy
FROM judged_reads
GROUP BY plate_reader
ORDER BY plate_reader
