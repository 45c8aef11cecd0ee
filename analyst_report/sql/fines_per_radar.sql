-- Fines per radar (section), most fined first, with the average speed of those fines.
-- A late correction of a fine is a second row with the same fine_id: only the latest
-- (by processed_at) counts. Replace {project}.{dataset} to run it in the BigQuery console.
WITH latest_fines AS (
  SELECT fine_id, radar_id, avg_speed_mph
  FROM `{project}.{dataset}.fines`
  WHERE is_ticketed
  QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY processed_at DESC) = 1
)
SELECT
  radar_id,
  COUNT(DISTINCT fine_id) AS fines,
  AVG(avg_speed_mph) AS mean_speed_mph
FROM latest_fines
GROUP BY radar_id
ORDER BY fines DESC, radar_id
