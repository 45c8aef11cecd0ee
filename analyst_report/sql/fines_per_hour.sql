-- Fines per hour of entry into the section (UTC), one row per hour that has fines.
-- A late correction of a fine is a second row with the same fine_id: only the latest
-- (by processed_at) counts. Replace {project}.{dataset} to run it in the BigQuery console.
WITH latest_fines AS (
  SELECT fine_id, entry_time
  FROM `{project}.{dataset}.fines`
  WHERE is_ticketed
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY processed_at DESC) = 1
)
SELECT
  TIMESTAMP_TRUNC(entry_time, HOUR) AS hour,
  COUNT(DISTINCT fine_id) AS fines
FROM latest_fines
GROUP BY hour
ORDER BY hour
