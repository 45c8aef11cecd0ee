-- Share of fines whose licence plate was read (license_plate not NULL).
-- A late correction of a fine is a second row with the same fine_id: only the latest
-- (by processed_at) counts. plate_read_share is NULL when there are no fines.
-- Replace {project}.{dataset} to run it in the BigQuery console.
WITH latest_fines AS (
  SELECT fine_id, license_plate
  FROM `{project}.{dataset}.fines`
  WHERE is_ticketed
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY processed_at DESC) = 1
)
SELECT
  COUNT(DISTINCT fine_id) AS fines,
  COUNTIF(license_plate IS NOT NULL) AS plates_read,
  SAFE_DIVIDE(COUNTIF(license_plate IS NOT NULL), COUNT(*)) AS plate_read_share
FROM latest_fines
