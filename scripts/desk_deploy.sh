#!/usr/bin/env bash
# Deploy the verification desk on Cloud Run behind Identity-Aware Proxy (docs/desk.md).
#
#   scripts/desk_deploy.sh PROJECT REGION EVIDENCE_BUCKET OFFICER... [--dry_run]
#
# OFFICER is an IAM member allowed through IAP: user:ana@city.example,
# group:traffic-officers@city.example. The pipeline's dataset (DATASET, default
# section_speed) must hold its tables and the desk's (python -m pipeline.provision).
#
# Creates the desk's service account with only what the desk calls: BigQuery Data Viewer on
# the `fines` table, a custom role (get, read, insert rows; never create, update or delete a
# table) on the desk's tables `fine_reviews`, `fine_claims` and `notices`, BigQuery Job User
# on the project (queries), Storage Object Viewer on the evidence bucket, Pub/Sub Publisher
# on the notices topic, Secret Manager Secret Accessor on the session key. Builds the image
# (desk/Dockerfile, Cloud Build), deploys it with IAP on, lets IAP's service agent invoke
# the service and grants each OFFICER IAP-secured Web App User
# (roles/iap.httpsResourceAccessor). Run again to deploy a new image: every step is a
# create-if-missing or an idempotent binding.
# --dry_run prints every command and runs none.
#
# Needs: gcloud and bq logged in as someone who may do all of the above (docs/desk.md,
# Who deploys), and a project in an organisation (IAP on Cloud Run needs one).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 PROJECT REGION EVIDENCE_BUCKET OFFICER... [--dry_run]" >&2
  exit 2
}
DRY_RUN=false
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--dry_run" ]; then DRY_RUN=true; else ARGS+=("$arg"); fi
done
[ "${#ARGS[@]}" -ge 4 ] || usage
PROJECT=${ARGS[0]} REGION=${ARGS[1]} BUCKET=${ARGS[2]}
OFFICERS=("${ARGS[@]:3}")
for officer in "${OFFICERS[@]}"; do
  [[ $officer =~ ^(user|group|domain):[^[:space:]]+$ ]] || {
    echo "desk_deploy: $officer is no IAM member (user:EMAIL, group:EMAIL, domain:DOMAIN)" >&2
    exit 2
  }
done

DATASET=${DATASET:-section_speed}
NOTICES_TOPIC=${NOTICES_TOPIC:-notices}
SERVICE=${SERVICE:-section-speed-desk}
REPOSITORY=section-speed
SA_NAME=section-speed-desk
SA=$SA_NAME@$PROJECT.iam.gserviceaccount.com
# What the desk calls on its own tables: Warehouse.check_tables (tables.get), its queries
# (tables.getData) and its appends (tabledata.insertAll: tables.updateData). BigQuery Data
# Editor would also let it create, update and delete tables, and it would hold on `fines`.
DESK_ROLE_ID=sectionSpeedDeskTables
DESK_ROLE=projects/$PROJECT/roles/$DESK_ROLE_ID
DESK_PERMISSIONS=bigquery.tables.get,bigquery.tables.getData,bigquery.tables.updateData
DESK_TABLES=(fine_reviews fine_claims notices)
SECRET=section-speed-desk-session-key
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^ *version="\(.*\)",$/\1/p' setup.py)}
IMAGE=$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/desk:$IMAGE_TAG

# --- how commands are shown and run (scripts/lib/commands.sh) ------------------------------
exec 3>&1  # the dry run's listing goes here even from inside $(...)

LOG_NAME=desk_deploy
# shellcheck source=scripts/lib/commands.sh
source scripts/lib/commands.sh
exists() {  # COMMAND...: whether a describe succeeds (the dry run assumes not: creates)
  $DRY_RUN && return 1
  "$@" >/dev/null 2>&1
}

# --- the deploy ------------------------------------------------------------------------------
step "APIs: Cloud Run, IAP, Cloud Build, Artifact Registry, Secret Manager"
run gcloud services enable run.googleapis.com iap.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com secretmanager.googleapis.com --project "$PROJECT"
capture PROJECT_NUMBER gcloud projects describe "$PROJECT" --format 'value(projectNumber)'
# IAP's signed header names the service it protects as its audience.
AUDIENCE=/projects/$PROJECT_NUMBER/locations/$REGION/services/$SERVICE
IAP_AGENT=service-$PROJECT_NUMBER@gcp-sa-iap.iam.gserviceaccount.com

step "The desk's service account and its roles, each on the one resource it needs"
if ! exists gcloud iam service-accounts describe "$SA" --project "$PROJECT"; then
  run gcloud iam service-accounts create "$SA_NAME" --project "$PROJECT" \
    --display-name "Section-speed verification desk"
fi
if ! exists gcloud iam roles describe "$DESK_ROLE_ID" --project "$PROJECT"; then
  run gcloud iam roles create "$DESK_ROLE_ID" --project "$PROJECT" \
    --title "Section-speed desk tables" --permissions "$DESK_PERMISSIONS" --stage GA
fi
retrying bq add-iam-policy-binding --member "serviceAccount:$SA" \
  --role roles/bigquery.dataViewer "$PROJECT:$DATASET.fines"
for table in "${DESK_TABLES[@]}"; do
  retrying bq add-iam-policy-binding --member "serviceAccount:$SA" --role "$DESK_ROLE" \
    "$PROJECT:$DATASET.$table"
done
retrying gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
  --role roles/bigquery.jobUser --condition None
retrying gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectViewer

step "The notices topic; the desk may publish to it"
if ! exists gcloud pubsub topics describe "$NOTICES_TOPIC" --project "$PROJECT"; then
  run gcloud pubsub topics create "$NOTICES_TOPIC" --project "$PROJECT"
fi
retrying gcloud pubsub topics add-iam-policy-binding "$NOTICES_TOPIC" --project "$PROJECT" \
  --member "serviceAccount:$SA" --role roles/pubsub.publisher

step "The session key every instance shares (DESK_SECRET)"
if ! exists gcloud secrets describe "$SECRET" --project "$PROJECT"; then
  if $DRY_RUN; then
    printf 'head -c 32 /dev/urandom | base64 | %s\n' "$(show gcloud secrets create "$SECRET" \
      --project "$PROJECT" --replication-policy automatic --data-file -)" >&3
  else
    head -c 32 /dev/urandom | base64 | run gcloud secrets create "$SECRET" \
      --project "$PROJECT" --replication-policy automatic --data-file -
  fi
fi
retrying gcloud secrets add-iam-policy-binding "$SECRET" --project "$PROJECT" \
  --member "serviceAccount:$SA" --role roles/secretmanager.secretAccessor

step "The image, built by Cloud Build from desk/Dockerfile"
if ! exists gcloud artifacts repositories describe "$REPOSITORY" --location "$REGION" \
  --project "$PROJECT"; then
  run gcloud artifacts repositories create "$REPOSITORY" --repository-format docker \
    --location "$REGION" --project "$PROJECT"
fi
run gcloud builds submit . --config desk/cloudbuild.yaml --substitutions "_IMAGE=$IMAGE" \
  --project "$PROJECT" --region "$REGION"

step "The service: IAP on, no unauthenticated access, the reviewer from IAP's header"
run gcloud beta run deploy "$SERVICE" --image "$IMAGE" --region "$REGION" --project "$PROJECT" \
  --service-account "$SA" --iap --no-allow-unauthenticated \
  --set-env-vars "DESK_PROJECT=$PROJECT,DESK_DATASET=$DATASET,DESK_BUCKET=$BUCKET,DESK_NOTICES_TOPIC=$NOTICES_TOPIC,DESK_IAP_AUDIENCE=$AUDIENCE" \
  --set-secrets "DESK_SECRET=$SECRET:latest"
run gcloud beta services identity create --service iap.googleapis.com --project "$PROJECT"
retrying gcloud run services add-iam-policy-binding "$SERVICE" --region "$REGION" \
  --project "$PROJECT" --member "serviceAccount:$IAP_AGENT" --role roles/run.invoker

step "The officers: through IAP to the desk"
for officer in "${OFFICERS[@]}"; do
  retrying gcloud beta iap web add-iam-policy-binding --resource-type cloud-run \
    --service "$SERVICE" --region "$REGION" --project "$PROJECT" --member "$officer" \
    --role roles/iap.httpsResourceAccessor
done
capture URL gcloud run services describe "$SERVICE" --region "$REGION" --project "$PROJECT" \
  --format 'value(status.url)'
if $DRY_RUN; then
  # shellcheck disable=SC2016  # the listing shows the placeholder
  printf '\n# the officers open "$URL"\n' >&3
else
  echo "desk_deploy: officers open $URL" >&2
fi
