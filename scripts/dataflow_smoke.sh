#!/usr/bin/env bash
# Operator smoke test on Google Cloud Dataflow: the deploy procedure of docs/deploy.md, run
# end to end in a project of yours, then undone.
#
#   scripts/dataflow_smoke.sh PROJECT REGION BUCKET [--dry-run]
#
# Enables the APIs, creates the workers' and the image build's service accounts with their
# roles, the buckets (staging, configuration, build, evidence: each written only by whoever
# must write it), the topics and the input subscription (retaining acknowledged messages
# for 7 days, so a seek can replay), the BigQuery dataset and tables (python -m
# pipeline.provision) and a custom role granting the workers only what they call on those
# tables, builds the one image for launcher and workers and the Flex Template, launches the
# job (a first launch: no --update), publishes generator traffic, waits (bounded) until every
# fine the generator expects is on the output topic and in BigQuery, drains the job and
# deletes everything it created but the custom role (see the clean-up). On failure it
# cancels the job and still cleans up (KEEP_RESOURCES=1 keeps them).
# --dry-run prints every command instead of running it; docs/deploy.md quotes that output
# for PROJECT=my-project REGION=us-central1 BUCKET=my-project-section-speed (a test checks).
#
# Needs: gcloud and bq logged in (gcloud auth login), Application Default Credentials for
# the Python steps (gcloud auth application-default login), .venv (make venv), and the
# roles of docs/deploy.md "Who deploys". CARS_API=https://... adds the evidence stage.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 PROJECT REGION BUCKET [--dry-run]" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || usage
PROJECT=$1 REGION=$2 BUCKET=$3
DRY_RUN=false
if [ $# -eq 4 ]; then [ "$4" = "--dry-run" ] || usage; DRY_RUN=true; fi

PYTHON=${PYTHON:-.venv/bin/python}
CARS_API=${CARS_API:-}
KEEP_RESOURCES=${KEEP_RESOURCES:-0}
# Stable names: an update relaunches the job under the same name (docs/deploy.md, Update).
JOB_NAME=section-speed
DATASET=section_speed
REPOSITORY=section-speed
SA_NAME=section-speed-worker
SA=$SA_NAME@$PROJECT.iam.gserviceaccount.com
# Cloud Build runs as an account of ours: the default one differs by project (the legacy
# Cloud Build account, or since 2024 the Compute Engine default account with whatever
# roles the organisation left it), and may lack what the build needs (docs/deploy.md).
BUILD_SA_NAME=section-speed-build
BUILD_SA=$BUILD_SA_NAME@$PROJECT.iam.gserviceaccount.com
# What the workers call on the warehouse tables, and nothing else: Warehouse.check_tables
# and the start-up checks (tables.get), Warehouse.insert (tabledata.insertAll). BigQuery
# Data Editor would also let them create, update and delete tables.
WAREHOUSE_ROLE_ID=sectionSpeedWarehouseWriter
WAREHOUSE_ROLE=projects/$PROJECT/roles/$WAREHOUSE_ROLE_ID
WAREHOUSE_PERMISSIONS=bigquery.tables.get,bigquery.tables.updateData
# One bucket per writer (docs/deploy.md, Buckets): BUCKET holds only Dataflow's staging and
# temp files, which the workers write; the sections file is configuration, which the
# workers only read; the build's source and log and the template spec are the build's and
# the deployer's, which the workers cannot touch; fine photos are evidence.
CONFIG_BUCKET=$BUCKET-config
BUILD_BUCKET=$BUCKET-build
EVIDENCE_BUCKET=$BUCKET-evidence
INPUT_TOPIC=camera-events
SUBSCRIPTION=camera-events-sub
OUTPUT_TOPIC=fines
DEAD_LETTER_TOPIC=dead-letter
# Pub/Sub delivers only to subscriptions that exist when a message is published: without
# this one the dead-letter topic's messages are lost (docs/deploy.md, Replay dead letters).
DEAD_LETTER_SUBSCRIPTION=dead-letter-sub
TAP=fines-smoke  # a subscription of ours on the output topic, to see the fines
# The package version tags the image: a new release, a new tag (docs/deploy.md, Update).
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^ *version="\(.*\)",$/\1/p' setup.py)}
IMAGE=$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/section-speed:$IMAGE_TAG
TEMPLATE=gs://$BUILD_BUCKET/templates/section-speed.json
SECTIONS=gs://$CONFIG_BUCKET/sections.json
WORK=${SMOKE_WORK:-/tmp/section-speed-smoke}  # the generator's truth, the fines seen
VEHICLES=20
WAIT_JOB_S=${WAIT_JOB_S:-900} WAIT_FINES_S=${WAIT_FINES_S:-900} WAIT_DRAIN_S=${WAIT_DRAIN_S:-900}
POLL_S=${POLL_S:-15}

# --- how commands are shown and run (scripts/lib/commands.sh) ------------------------------
exec 3>&1  # the dry run's listing goes here even from inside $(...)

LOG_NAME=smoke
# shellcheck source=scripts/lib/commands.sh
source scripts/lib/commands.sh
wait_until() {  # WHAT SECONDS CHECK...: run CHECK every POLL_S seconds until it succeeds
  local what=$1 seconds=$2; shift 2
  if $DRY_RUN; then
    printf '# repeated until %s (at most %d min):\n' "$what" $((seconds / 60)) >&3; "$@"; return 0
  fi
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    ((SECONDS < deadline)) || { echo "smoke: gave up waiting until $what" >&2; return 1; }
    sleep "$POLL_S"
  done
}

# --- checks the waits poll ---------------------------------------------------------------
job_state() {
  local state
  capture state gcloud dataflow jobs describe "$JOB_ID" --region "$REGION" --project "$PROJECT" \
    --format 'value(currentState)'
  $DRY_RUN && return 0
  case $state in
    "$1") return 0 ;;
    JOB_STATE_FAILED | JOB_STATE_CANCELLED | JOB_STATE_UPDATED)
      echo "smoke: job $JOB_ID is $state" >&2; exit 1 ;;
    *) return 1 ;;
  esac
}
job_is_running() { job_state JOB_STATE_RUNNING; }
job_is_drained() { job_state JOB_STATE_DRAINED; }

fines_on_topic() {  # distinct fine_ids seen on the tap so far >= EXPECTED_FINES
  local pulled
  capture pulled gcloud pubsub subscriptions pull "$TAP" --auto-ack --limit 100 --format json \
    --project "$PROJECT"
  $DRY_RUN && return 0
  "$PYTHON" -c '
import base64, json, sys
seen_file = sys.argv[1]
for received in json.loads(sys.stdin.read() or "[]"):
    data = received["message"].get("data", "")
    try:
        data = base64.b64decode(data, validate=True)
    except ValueError:
        pass  # already decoded by this gcloud
    message = json.loads(data)
    if message.get("is_ticketed", message.get("is_Ticketed")) is True:
        with open(seen_file, "a") as seen:
            seen.write(message["fine_id"] + "\n")
' "$WORK/fines-seen.txt" <<<"$pulled"
  local seen
  seen=$(sort -u "$WORK/fines-seen.txt" | wc -l)
  echo "smoke: $seen of $EXPECTED_FINES fines on $OUTPUT_TOPIC" >&2
  ((seen >= EXPECTED_FINES))
}

fines_in_bigquery() {
  local answer
  capture answer bq query --project_id "$PROJECT" --use_legacy_sql=false --format csv --quiet \
    "SELECT COUNT(DISTINCT fine_id) AS fines FROM \`$PROJECT.$DATASET.fines\`"
  $DRY_RUN && return 0
  local count=${answer##*$'\n'}
  echo "smoke: $count of $EXPECTED_FINES fines in $DATASET.fines" >&2
  ((count >= EXPECTED_FINES))
}

# --- clean-up, also after a failure ------------------------------------------------------
JOB_ID=""
CLEANED=false
cleanup() {
  $CLEANED && return 0
  CLEANED=true
  if [ "$KEEP_RESOURCES" = 1 ]; then echo "smoke: KEEP_RESOURCES=1, nothing deleted" >&2; return 0; fi
  step "Clean up: everything this script created but the custom role"
  run gcloud pubsub subscriptions delete "$TAP" "$SUBSCRIPTION" "$DEAD_LETTER_SUBSCRIPTION" \
    --project "$PROJECT" || true
  run gcloud pubsub topics delete "$INPUT_TOPIC" "$OUTPUT_TOPIC" "$DEAD_LETTER_TOPIC" \
    --project "$PROJECT" || true
  run bq rm -r -f -d "$PROJECT:$DATASET" || true
  run gcloud artifacts repositories delete "$REPOSITORY" --location "$REGION" --quiet \
    --project "$PROJECT" || true
  run gcloud storage rm --recursive "gs://$BUCKET" "gs://$CONFIG_BUCKET" "gs://$BUILD_BUCKET" \
    "gs://$EVIDENCE_BUCKET" || true
  run gcloud projects remove-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
    --role roles/dataflow.worker --condition None || true
  # The custom role stays: deleted, its id would stay taken for weeks, failing the next run;
  # with the tables gone it is bound to nothing, so it grants nothing.
  run gcloud iam service-accounts delete "$BUILD_SA" --quiet --project "$PROJECT" || true
  run gcloud iam service-accounts delete "$SA" --quiet --project "$PROJECT" || true
}
on_exit() {
  local status=$?
  if [ $status -ne 0 ] && ! $DRY_RUN && [ -n "$JOB_ID" ]; then
    echo "smoke: failed; cancelling job $JOB_ID" >&2
    run gcloud dataflow jobs cancel "$JOB_ID" --region "$REGION" --project "$PROJECT" || true
  fi
  $DRY_RUN || cleanup
}
trap on_exit EXIT

# --- the procedure -----------------------------------------------------------------------
step "Preflight: gcloud and Application Default Credentials"
run gcloud auth print-access-token --quiet >/dev/null
run gcloud auth application-default print-access-token --quiet >/dev/null
$DRY_RUN || mkdir -p "$WORK"

step "APIs: exactly what the pipeline and this procedure call"
run gcloud services enable dataflow.googleapis.com compute.googleapis.com \
  pubsub.googleapis.com bigquery.googleapis.com storage.googleapis.com \
  vision.googleapis.com artifactregistry.googleapis.com cloudbuild.googleapis.com \
  --project "$PROJECT"

step "Service accounts: the workers' (the launcher VM runs as it too) and the image build's"
run gcloud iam service-accounts create "$SA_NAME" --display-name 'section-speed workers' \
  --project "$PROJECT"
run gcloud iam service-accounts create "$BUILD_SA_NAME" \
  --display-name 'section-speed image build' --project "$PROJECT"

step "Custom role: only what the workers call on the warehouse tables"
# Kept from an earlier run: give it this run's permissions.
run gcloud iam roles create "$WAREHOUSE_ROLE_ID" --project "$PROJECT" \
  --title 'section-speed warehouse writer' --permissions "$WAREHOUSE_PERMISSIONS" --stage GA ||
  run gcloud iam roles update "$WAREHOUSE_ROLE_ID" --project "$PROJECT" \
    --permissions "$WAREHOUSE_PERMISSIONS" --stage GA

step "Buckets: staging (workers write), configuration (workers read), build, fine photos"
for bucket in "$BUCKET" "$CONFIG_BUCKET" "$BUILD_BUCKET" "$EVIDENCE_BUCKET"; do
  run gcloud storage buckets create "gs://$bucket" --location "$REGION" \
    --uniform-bucket-level-access --project "$PROJECT"
done

step "Pub/Sub: the input subscription keeps acknowledged messages 7 days (seek and replay)"
run gcloud pubsub topics create "$INPUT_TOPIC" "$OUTPUT_TOPIC" "$DEAD_LETTER_TOPIC" \
  --project "$PROJECT"
run gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic "$INPUT_TOPIC" \
  --retain-acked-messages --message-retention-duration 7d --project "$PROJECT"
run gcloud pubsub subscriptions create "$TAP" --topic "$OUTPUT_TOPIC" --project "$PROJECT"
run gcloud pubsub subscriptions create "$DEAD_LETTER_SUBSCRIPTION" --topic "$DEAD_LETTER_TOPIC" \
  --message-retention-duration 7d --project "$PROJECT"

step "Artifact Registry repository for the image"
run gcloud artifacts repositories create "$REPOSITORY" --repository-format docker \
  --location "$REGION" --project "$PROJECT"

step "Roles of the workers' service account, each on the one resource it needs"
retrying gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
  --role roles/dataflow.worker --condition None
retrying gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectAdmin
retrying gcloud storage buckets add-iam-policy-binding "gs://$CONFIG_BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectViewer
retrying gcloud storage buckets add-iam-policy-binding "gs://$EVIDENCE_BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectCreator
retrying gcloud storage buckets add-iam-policy-binding "gs://$EVIDENCE_BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectViewer
retrying gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" \
  --member "serviceAccount:$SA" --role roles/pubsub.subscriber --project "$PROJECT"
retrying gcloud pubsub subscriptions add-iam-policy-binding "$SUBSCRIPTION" \
  --member "serviceAccount:$SA" --role roles/pubsub.viewer --project "$PROJECT"
retrying gcloud pubsub topics add-iam-policy-binding "$OUTPUT_TOPIC" \
  --member "serviceAccount:$SA" --role roles/pubsub.publisher --project "$PROJECT"
retrying gcloud pubsub topics add-iam-policy-binding "$DEAD_LETTER_TOPIC" \
  --member "serviceAccount:$SA" --role roles/pubsub.publisher --project "$PROJECT"
retrying gcloud artifacts repositories add-iam-policy-binding "$REPOSITORY" \
  --location "$REGION" --member "serviceAccount:$SA" \
  --role roles/artifactregistry.reader --project "$PROJECT"

step "Roles of the image build's service account: push the image; its source and log"
# On the build bucket only: the build can rewrite neither the rules nor the workers' files.
retrying gcloud artifacts repositories add-iam-policy-binding "$REPOSITORY" \
  --location "$REGION" --member "serviceAccount:$BUILD_SA" \
  --role roles/artifactregistry.writer --project "$PROJECT"
retrying gcloud storage buckets add-iam-policy-binding "gs://$BUILD_BUCKET" \
  --member "serviceAccount:$BUILD_SA" --role roles/storage.objectAdmin

step "BigQuery: dataset and tables at deploy time; the custom role on each table for the workers"
# The tables the job writes, from section_speed/domain/schemas.py's TABLES: read even in a dry
# run, which it changes nothing in.
mapfile -t WORKER_TABLES < <("$PYTHON" -c '
from section_speed.domain.schemas import TABLES
print("\n".join(table.name for table in TABLES))')
((${#WORKER_TABLES[@]})) || { echo "smoke: $PYTHON could not list the tables" >&2; exit 1; }
run "$PYTHON" -m pipeline.provision --project "$PROJECT" --bq_dataset "$DATASET" \
  --location "$REGION"
for table in "${WORKER_TABLES[@]}"; do
  retrying bq add-iam-policy-binding --member "serviceAccount:$SA" --role "$WAREHOUSE_ROLE" \
    --table "$PROJECT:$DATASET.$table"
done

step "One image for the launcher and the workers, then the Flex Template spec"
# As our build account, with the uploaded source and the build log in the build bucket
# (an account of one's own must name where its log goes).
retrying gcloud builds submit --tag "$IMAGE" --project "$PROJECT" \
  --service-account "projects/$PROJECT/serviceAccounts/$BUILD_SA" \
  --gcs-source-staging-dir "gs://$BUILD_BUCKET/source" --gcs-log-dir "gs://$BUILD_BUCKET/logs" .
run gcloud dataflow flex-template build "$TEMPLATE" --image "$IMAGE" --sdk-language PYTHON \
  --metadata-file metadata.json --project "$PROJECT"

step "The sections file: each section's limit and ends, without which no timed fine is issued"
# The simulated section's file, as the traffic below drives it (a city writes its surveyed
# sections by hand: docs/enforcement.md).
run "$PYTHON" -m generator --vehicles 1 --seed 7 --output "$WORK/section-probe.jsonl" \
  --sections_file "$WORK/sections.json"
retrying gcloud storage cp --content-type application/json "$WORK/sections.json" \
  "$SECTIONS"

step "First launch under the stable job name (an update adds --update, docs/deploy.md)"
PARAMETERS=sdk_container_image=$IMAGE,input_subscription=$SUBSCRIPTION,output_topic=$OUTPUT_TOPIC
PARAMETERS+=,dead_letter_topic=$DEAD_LETTER_TOPIC,bq_dataset=$DATASET
PARAMETERS+=,sections_file=$SECTIONS
if [ -n "$CARS_API" ]; then PARAMETERS+=,cars_api=$CARS_API,bucket=$EVIDENCE_BUCKET; fi
capture JOB_ID gcloud dataflow flex-template run "$JOB_NAME" \
  --template-file-gcs-location "$TEMPLATE" --region "$REGION" \
  --service-account-email "$SA" --staging-location "gs://$BUCKET/stg" \
  --temp-location "gs://$BUCKET/tmp" --enable-streaming-engine --max-workers 3 \
  --parameters "$PARAMETERS" --project "$PROJECT" --format 'value(job.id)'
wait_until "the job is running" "$WAIT_JOB_S" job_is_running

step "Traffic: $VEHICLES simulated vehicles, the generator's verdicts written alongside"
run "$PYTHON" -m generator --project_id "$PROJECT" --topic_name "$INPUT_TOPIC" \
  --vehicles "$VEHICLES" --rate 5 --speeding_fraction 0.5 --seed 7 \
  --truth "$WORK/truth.jsonl"
if ! $DRY_RUN; then
  EXPECTED_FINES=$("$PYTHON" -c '
import json, sys
print(sum(json.loads(line)["must_be_fined"] for line in open(sys.argv[1]) if line.strip()))
' "$WORK/truth.jsonl")
  ((EXPECTED_FINES > 0)) || { echo "smoke: the traffic has no speeder to fine" >&2; exit 1; }
  : >"$WORK/fines-seen.txt"
fi

step "Every expected fine on the output topic, then in BigQuery"
wait_until "every expected fine is on the topic" "$WAIT_FINES_S" fines_on_topic
wait_until "every expected fine is in BigQuery" "$WAIT_FINES_S" fines_in_bigquery

step "Drain: open sessions are closed and published, then the job stops"
run gcloud dataflow jobs drain "$JOB_ID" --region "$REGION" --project "$PROJECT"
wait_until "the job is drained" "$WAIT_DRAIN_S" job_is_drained

cleanup
$DRY_RUN || echo "smoke: passed: $EXPECTED_FINES fines on $OUTPUT_TOPIC and in BigQuery" >&2
