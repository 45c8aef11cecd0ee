-- The latest fines (by entry into the section), newest first: the report's table.
-- A late correction of a fine is a second row with the same fine_id: only the latest
-- (by processed_at) is shown. The number of rows is the query parameter "latest": in the
-- BigQuery console write a number in its place, or run `bq query --parameter=latest:INT64:50`.
-- Replace {project}.{dataset} too.
SELECT
  fine_id,
  radar_id,
  vehicle_id,
  license_plate,
  plate_confidence,
  avg_speed_kmh,
  avg_speed_mph,
  speed_limit_mph,
  distance_m,
  duration_s,
  entry_time,
  exit_time,
  image_url,
  processed_at
FROM `{project}.{dataset}.fines`
WHERE is_ticketed
QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY processed_at DESC) = 1
ORDER BY entry_time DESC, fine_id
LIMIT @latest
