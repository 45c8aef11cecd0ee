-- Fines per limit source (default, window, temporary, signal, class: docs/enforcement.md),
-- most first, with the mean of the limits applied. Rows written before the limit source
-- existed count as default.
-- Each traversal once, as of one moment (docs/report.md): the views counted_traversals
-- and fine_revisions hold the rule (docs/warehouse.md, Views). The moment is the query
-- parameter as_of (TIMESTAMP): rows the pipeline processed after it are left out. In the
-- BigQuery console put CURRENT_TIMESTAMP() in its place, or run
-- `bq query --parameter=as_of:TIMESTAMP:'2026-11-18 12:00:00+00'`.
WITH traversals AS (
  SELECT *
  FROM `{project}.{dataset}.counted_traversals`
  WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)
),
-- A fine's evidence (plate, photo) is its latest revision as of that moment.
evidence AS (
  SELECT fine_id, license_plate, plate_confidence, image_url
  FROM `{project}.{dataset}.fine_revisions`
  WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)
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
