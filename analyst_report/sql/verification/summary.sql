-- The desk's totals, one row: fines pending, issued and rejected, notices, and how
-- long officers take from opening a fine (its claim) to deciding it: median and 90th
-- percentile in seconds, over every decision on a plate.
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
  COUNTIF(decision IS NULL) AS fines_pending,
  COUNTIF(decision IS NULL AND decided_before) AS fines_changed,
  COUNTIF(decision IN ('confirmed', 'corrected')) AS fines_issued,
  COUNTIF(decision = 'rejected') AS fines_rejected,
  (SELECT COUNT(DISTINCT notice_id) AS n FROM issued_notices) AS notices,
  (SELECT COUNT(*) AS n FROM decisions WHERE decision != 'acknowledged') AS decisions,
  (
    SELECT APPROX_QUANTILES(TIMESTAMP_DIFF(decided_at, opened_at, MILLISECOND), 100)[OFFSET(50)] AS ms
    FROM decisions WHERE decision != 'acknowledged'
  ) AS decision_ms_median,
  (
    SELECT APPROX_QUANTILES(TIMESTAMP_DIFF(decided_at, opened_at, MILLISECOND), 100)[OFFSET(90)] AS ms
    FROM decisions WHERE decision != 'acknowledged'
  ) AS decision_ms_p90
FROM verified
