-- Fines per limit source (default, window, temporary, signal, class: docs/enforcement.md),
-- most first, with the mean of the limits applied. Rows written before the limit source
-- existed count as default.
-- Each traversal once, as of one moment (docs/report.md). The moment is the query
-- parameter as_of (TIMESTAMP): rows the pipeline processed after it are left out. In the
-- BigQuery console put CURRENT_TIMESTAMP() in its place, or run
-- `bq query --parameter=as_of:TIMESTAMP:'2026-11-18 12:00:00+00'`.
WITH speed_rows AS (
  SELECT *
  FROM `{project}.{dataset}.vehicle_speeds`
  WHERE processed_at <= @as_of
),
-- A late detection re-fires its traversal with the same id: keep the latest row per id.
latest_speeds AS (
  SELECT *
  FROM speed_rows
  QUALIFY ROW_NUMBER() OVER (PARTITION BY traversal_id ORDER BY revision DESC, processed_at DESC) = 1
),
-- A session merge lists in supersedes the ids it replaces: drop those ids. A traversal
-- withdrawn by a late detection (withdrawn_reason) is no measurement: drop it too.
traversals AS (
  SELECT *
  FROM latest_speeds
  WHERE traversal_id NOT IN (
    SELECT superseded_id FROM latest_speeds, UNNEST(supersedes) AS superseded_id
  )
  AND withdrawn_reason IS NULL
),
-- A fine's evidence (plate, photo) is the latest fines row of its id.
evidence AS (
  SELECT fine_id, license_plate, plate_confidence, image_url
  FROM `{project}.{dataset}.fines`
  WHERE processed_at <= @as_of
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY revision DESC, processed_at DESC) = 1
),
-- A fine is a traversal whose kept row is over the limit; evidence may still be on its way.
fines AS (
  SELECT
    traversals.*,
    evidence.license_plate,
    evidence.plate_confidence,
    evidence.image_url,
    evidence.fine_id IS NOT NULL AS has_evidence
  FROM traversals
  LEFT JOIN evidence ON evidence.fine_id = traversals.traversal_id
  WHERE traversals.is_ticketed
)
SELECT
  COALESCE(limit_source, 'default') AS limit_source,
  COUNT(*) AS fines,
  AVG(speed_limit_mph) AS mean_limit_mph
FROM fines
GROUP BY limit_source
ORDER BY fines DESC, limit_source
