-- Distribution of section average speeds over every measured traversal (fined or not),
-- in 1 mph bins, per radar and speed limit (so the limits in force can be marked), split
-- by the pipeline's own verdict (is_ticketed: strictly over limit + tolerance).
-- A late correction of a traversal is a second row with the same traversal_id: only the
-- latest (by processed_at) counts. Replace {project}.{dataset} to run it in the console.
WITH latest_traversals AS (
  SELECT traversal_id, radar_id, avg_speed_mph, speed_limit_mph, is_ticketed
  FROM `{project}.{dataset}.vehicle_speeds`
  WHERE avg_speed_mph IS NOT NULL
  QUALIFY ROW_NUMBER() OVER (PARTITION BY traversal_id ORDER BY processed_at DESC) = 1
)
SELECT
  radar_id,
  speed_limit_mph,
  CAST(FLOOR(avg_speed_mph) AS INT64) AS speed_bin_mph,
  is_ticketed,
  COUNT(DISTINCT traversal_id) AS traversals
FROM latest_traversals
GROUP BY radar_id, speed_limit_mph, speed_bin_mph, is_ticketed
ORDER BY radar_id, speed_limit_mph, speed_bin_mph, is_ticketed
