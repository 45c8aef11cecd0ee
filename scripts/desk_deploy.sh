#!/usr/bin/env bash
# Deploy the verification desk on Cloud Run behind Identity-Aware Proxy, its PostgreSQL on
# Cloud SQL, and the push of the pipeline's fines to it (docs/desk.md, Deploy on Google Cloud).
#
#   scripts/desk_deploy.sh PROJECT REGION EVIDENCE_BUCKET OFFICER... [--dry_run]
#
# OFFICER is an IAM member allowed through IAP: user:ana@city.example,
# group:traffic-officers@city.example. The pipeline's dataset (DATASET, default
# section_speed) must hold the desk's tables fine_reviews and notices (python -m
# pipeline.provision); the pipeline's fines topic (FINES_TOPIC, default fines) must exist.
#
# Creates, each only if missing:
# - the desk's service account with only what the desk calls: a custom role of get and
#   insert rows on `fine_reviews` and `notices` (its outbox appends decisions and notices
#   for the analysts; no queries, no read of `fines`), Cloud SQL Client and Instance User on
#   its instance only, Storage Object Viewer on the evidence bucket, Pub/Sub Publisher on
#   the notices topic, Secret Manager Secret Accessor on the session key; the grants of
#   earlier deploys it no longer needs are removed;
# - the migration's service account, which owns the desk's schema: Cloud SQL Client and
#   Instance User on the desk's instance only, nothing else;
# - the Cloud SQL for PostgreSQL instance (Enterprise edition, shared-core db-f1-micro, IAM
#   database authentication on, connections only through Cloud SQL connectors), its
#   database and two IAM database users: the migration's, which may create the schema, and
#   the desk's, which may only connect and act as desk_app (no UPDATE or DELETE on the
#   record) and owns nothing; what earlier deploys granted the desk's user, and the tables
#   it owned, are taken back (no password anywhere: the grants run as an import);
# - the desk's own build service account (logs, push to the desk's repository, read its
#   staged source) and the image, built by Cloud Build from desk/Dockerfile;
# - the migration job (the same image, `python -m desk.migrate` as the migration's
#   account), run to its end before the services deploy;
# - the service with IAP on, CPU always allocated (the outbox publisher runs between
#   requests) and at most MAX_INSTANCES instances; IAP's service agent may invoke it and
#   each OFFICER is an IAP-secured Web App User;
# - the push service (the same image, reachable only from inside the project, which is where
#   Pub/Sub push comes from) and the push subscription on the fines topic, whose OIDC token
#   of a dedicated service account the desk verifies.
# Run again to deploy a new image: every step is a create-if-missing or an idempotent
# binding. --dry_run prints every command and runs none.
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
FINES_TOPIC=${FINES_TOPIC:-fines}
SERVICE=${SERVICE:-section-speed-desk}
PUSH_SERVICE=$SERVICE-push
# Two officers' instances at most: each holds a few connections to a db-f1-micro, which
# allows 25, and bills a whole vCPU all the time it runs (CPU always allocated).
MAX_INSTANCES=${MAX_INSTANCES:-2}
REPOSITORY=section-speed
SA_NAME=section-speed-desk
SA=$SA_NAME@$PROJECT.iam.gserviceaccount.com
BUILD_SA_NAME=section-speed-desk-build
BUILD_SA=$BUILD_SA_NAME@$PROJECT.iam.gserviceaccount.com
PUSH_SA_NAME=section-speed-desk-push
PUSH_SA=$PUSH_SA_NAME@$PROJECT.iam.gserviceaccount.com
MIGRATE_SA_NAME=section-speed-desk-migrate
MIGRATE_SA=$MIGRATE_SA_NAME@$PROJECT.iam.gserviceaccount.com
MIGRATE_JOB=$SERVICE-migrate
# What the desk calls on its BigQuery tables: the client's insert (tables.get for the
# schema) and tabledata.insertAll (tables.updateData). It reads none of them any more.
DESK_ROLE_ID=sectionSpeedDeskTables
DESK_ROLE=projects/$PROJECT/roles/$DESK_ROLE_ID
DESK_PERMISSIONS=bigquery.tables.get,bigquery.tables.updateData
DESK_TABLES=(fine_reviews notices)
SECRET=section-speed-desk-session-key
# Cloud SQL: the smallest tier (shared core, Enterprise edition only) and PostgreSQL 15,
# the major version the local stack and the tests run (Debian bookworm's).
SQL_INSTANCE=${SQL_INSTANCE:-section-speed-desk}
SQL_TIER=db-f1-micro
SQL_VERSION=POSTGRES_15
DATABASE=desk
DB_USER=${SA%.gserviceaccount.com}  # an IAM service account's PostgreSQL name
MIGRATE_DB_USER=${MIGRATE_SA%.gserviceaccount.com}
CONNECTION=$PROJECT:$REGION:$SQL_INSTANCE
SQL_RESOURCE=projects/$PROJECT/instances/$SQL_INSTANCE
DEPLOY_BUCKET=gs://$PROJECT-section-speed-desk-deploy  # staged source, the grant file
GRANTS_OBJECT=$DEPLOY_BUCKET/sql/desk-grants.sql
SUBSCRIPTION=${SUBSCRIPTION:-desk-fines-push}
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
revoke() {  # COMMAND...: remove a grant an earlier deploy made; absent already is fine
  if $DRY_RUN; then show "$@" >&3; return 0; fi
  printf '+ %s\n' "$(show "$@")" >&2
  "$@" >/dev/null 2>&1 || echo "$LOG_NAME: was not granted" >&2
}
piped() {  # TEXT COMMAND...: the command reading TEXT on its standard input
  local text=$1
  shift
  if $DRY_RUN; then
    printf '%s | %s\n' "$(show printf '%s\n' "$text")" "$(show "$@")" >&3
  else
    printf '%s\n' "$text" | run "$@"
  fi
}

# --- the deploy ------------------------------------------------------------------------------
step "APIs: Cloud Run, IAP, Cloud Build, Artifact Registry, Secret Manager, Cloud SQL, Pub/Sub"
run gcloud services enable run.googleapis.com iap.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com secretmanager.googleapis.com sqladmin.googleapis.com \
  pubsub.googleapis.com --project "$PROJECT"
capture PROJECT_NUMBER gcloud projects describe "$PROJECT" --format 'value(projectNumber)'
# IAP's signed header names the service it protects as its audience.
AUDIENCE=/projects/$PROJECT_NUMBER/locations/$REGION/services/$SERVICE
IAP_AGENT=service-$PROJECT_NUMBER@gcp-sa-iap.iam.gserviceaccount.com
PUBSUB_AGENT=service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com
# The push service's deterministic URL: known before it exists, so the subscription, its
# token's audience and the desk's --push_audience agree from the first deploy.
PUSH_URL=https://$PUSH_SERVICE-$PROJECT_NUMBER.$REGION.run.app
PUSH_AUDIENCE=$PUSH_URL/push/fines
PUSH_SERVICE_AUDIENCE=/projects/$PROJECT_NUMBER/locations/$REGION/services/$PUSH_SERVICE
SQL_CONDITION="expression=resource.name == \"$SQL_RESOURCE\",title=desk-instance-only"

step "The desk's service account and its roles, each on the one resource it needs"
if ! exists gcloud iam service-accounts describe "$SA" --project "$PROJECT"; then
  run gcloud iam service-accounts create "$SA_NAME" --project "$PROJECT" \
    --display-name "Section-speed verification desk"
fi
if ! exists gcloud iam roles describe "$DESK_ROLE_ID" --project "$PROJECT"; then
  run gcloud iam roles create "$DESK_ROLE_ID" --project "$PROJECT" \
    --title "Section-speed desk tables" --permissions "$DESK_PERMISSIONS" --stage GA
else  # an earlier deploy's role also read the tables: set today's permissions
  run gcloud iam roles update "$DESK_ROLE_ID" --project "$PROJECT" \
    --permissions "$DESK_PERMISSIONS" --quiet
fi
for table in "${DESK_TABLES[@]}"; do
  retrying bq add-iam-policy-binding --member "serviceAccount:$SA" --role "$DESK_ROLE" \
    "$PROJECT:$DATASET.$table"
done
# Earlier deploys let the desk query fines and claims; it no longer reads BigQuery.
revoke bq remove-iam-policy-binding --member "serviceAccount:$SA" \
  --role roles/bigquery.dataViewer "$PROJECT:$DATASET.fines"
revoke bq remove-iam-policy-binding --member "serviceAccount:$SA" --role "$DESK_ROLE" \
  "$PROJECT:$DATASET.fine_claims"
revoke gcloud projects remove-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
  --role roles/bigquery.jobUser --condition None
retrying gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$SA" --role roles/storage.objectViewer
# Connect (Client) and log in with IAM (Instance User), on the desk's instance only.
for role in roles/cloudsql.client roles/cloudsql.instanceUser; do
  retrying gcloud projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" \
    --role "$role" --condition "$SQL_CONDITION"
done

step "The migration's service account: it owns the schema; Cloud SQL on the instance only"
if ! exists gcloud iam service-accounts describe "$MIGRATE_SA" --project "$PROJECT"; then
  run gcloud iam service-accounts create "$MIGRATE_SA_NAME" --project "$PROJECT" \
    --display-name "Section-speed desk schema migrations"
fi
for role in roles/cloudsql.client roles/cloudsql.instanceUser; do
  retrying gcloud projects add-iam-policy-binding "$PROJECT" \
    --member "serviceAccount:$MIGRATE_SA" --role "$role" --condition "$SQL_CONDITION"
done

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

step "The database: Cloud SQL for PostgreSQL, IAM login only, the migration's and desk's users"
if ! exists gcloud sql instances describe "$SQL_INSTANCE" --project "$PROJECT"; then
  run gcloud sql instances create "$SQL_INSTANCE" --project "$PROJECT" --region "$REGION" \
    --database-version "$SQL_VERSION" --edition enterprise --tier "$SQL_TIER" \
    --availability-type zonal --storage-type SSD --storage-size 10 --storage-auto-increase \
    --backup-start-time 03:00 --enable-point-in-time-recovery \
    --database-flags cloudsql.iam_authentication=on --connector-enforcement REQUIRED \
    --deletion-protection
fi
if ! exists gcloud sql databases describe "$DATABASE" --instance "$SQL_INSTANCE" \
  --project "$PROJECT"; then
  run gcloud sql databases create "$DATABASE" --instance "$SQL_INSTANCE" --project "$PROJECT"
fi
for user in "$MIGRATE_DB_USER" "$DB_USER"; do
  if ! exists gcloud sql users describe "$user" --instance "$SQL_INSTANCE" \
    --project "$PROJECT"; then
    run gcloud sql users create "$user" --instance "$SQL_INSTANCE" --project "$PROJECT" \
      --type cloud_iam_service_account
  fi
done
# Two logins, so that the one the desk runs as cannot rewrite the record. The migration's
# user creates and so owns the schema: CREATE on the database and schema public, and the
# role the desk's code runs as (desk_app, made here) with ADMIN OPTION so the migration can
# grant that role its rights; no CREATEROLE. The desk's user may connect and act as
# desk_app (no UPDATE or DELETE on decisions, notices and recalls), nothing more: an owner
# could RESET ROLE and rewrite them. Earlier deploys let the desk's user migrate, so it
# may own the tables and hold CREATE and ADMIN OPTION: REASSIGN OWNED hands its objects to
# the migration's user (it needs membership in both roles, which postgres, not a superuser
# on Cloud SQL but CREATEROLE, grants itself for the statement) and the REVOKEs take the
# rest back. Cloud SQL runs this as postgres during an import (no password is set or
# sent); each statement is idempotent.
if ! exists gcloud storage buckets describe "$DEPLOY_BUCKET" --project "$PROJECT"; then
  run gcloud storage buckets create "$DEPLOY_BUCKET" --project "$PROJECT" \
    --location "$REGION" --uniform-bucket-level-access --public-access-prevention
fi
capture SQL_AGENT gcloud sql instances describe "$SQL_INSTANCE" --project "$PROJECT" \
  --format 'value(serviceAccountEmailAddress)'
retrying gcloud storage buckets add-iam-policy-binding "$DEPLOY_BUCKET" \
  --member "serviceAccount:$SQL_AGENT" --role roles/storage.objectViewer
MIGRATOR="\"$MIGRATE_DB_USER\"" RUNTIME="\"$DB_USER\""  # quoted SQL names
GRANTS="GRANT CONNECT, CREATE ON DATABASE $DATABASE TO $MIGRATOR;"
GRANTS+=" GRANT USAGE, CREATE ON SCHEMA public TO $MIGRATOR;"
# shellcheck disable=SC2016  # $$ quotes the DO block's body in SQL, not a shell variable
GRANTS+=' DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '"'desk_app'"')'
GRANTS+=' THEN CREATE ROLE desk_app NOLOGIN; END IF; END $$;'
GRANTS+=" GRANT desk_app TO $MIGRATOR WITH ADMIN OPTION;"
GRANTS+=" GRANT $RUNTIME, $MIGRATOR TO CURRENT_USER;"
GRANTS+=" REASSIGN OWNED BY $RUNTIME TO $MIGRATOR;"
GRANTS+=" REVOKE $RUNTIME, $MIGRATOR FROM CURRENT_USER;"
GRANTS+=" REVOKE CREATE ON DATABASE $DATABASE FROM $RUNTIME;"
GRANTS+=" REVOKE CREATE ON SCHEMA public FROM $RUNTIME;"
GRANTS+=" GRANT CONNECT ON DATABASE $DATABASE TO $RUNTIME;"
GRANTS+=" GRANT USAGE ON SCHEMA public TO $RUNTIME;"
GRANTS+=" GRANT desk_app TO $RUNTIME;"
GRANTS+=" REVOKE ADMIN OPTION FOR desk_app FROM $RUNTIME;"
piped "$GRANTS" gcloud storage cp - "$GRANTS_OBJECT" --project "$PROJECT"
# retrying: the instance's agent may not read the bucket for a few seconds after the grant
retrying gcloud sql import sql "$SQL_INSTANCE" "$GRANTS_OBJECT" --database "$DATABASE" \
  --user postgres --project "$PROJECT" --quiet

step "The image, built by Cloud Build from desk/Dockerfile as the desk's build account"
if ! exists gcloud artifacts repositories describe "$REPOSITORY" --location "$REGION" \
  --project "$PROJECT"; then
  run gcloud artifacts repositories create "$REPOSITORY" --repository-format docker \
    --location "$REGION" --project "$PROJECT"
fi
if ! exists gcloud iam service-accounts describe "$BUILD_SA" --project "$PROJECT"; then
  run gcloud iam service-accounts create "$BUILD_SA_NAME" --project "$PROJECT" \
    --display-name "Section-speed desk image build"
fi
# What a build needs: write its log, read the staged source, push the image; nothing else
# (the default Cloud Build account may do much more in the project).
retrying gcloud projects add-iam-policy-binding "$PROJECT" \
  --member "serviceAccount:$BUILD_SA" --role roles/logging.logWriter --condition None
retrying gcloud storage buckets add-iam-policy-binding "$DEPLOY_BUCKET" \
  --member "serviceAccount:$BUILD_SA" --role roles/storage.objectViewer
retrying gcloud artifacts repositories add-iam-policy-binding "$REPOSITORY" \
  --location "$REGION" --project "$PROJECT" --member "serviceAccount:$BUILD_SA" \
  --role roles/artifactregistry.writer
run gcloud builds submit . --config desk/cloudbuild.yaml --substitutions "_IMAGE=$IMAGE" \
  --project "$PROJECT" --region "$REGION" \
  --service-account "projects/$PROJECT/serviceAccounts/$BUILD_SA" \
  --gcs-source-staging-dir "$DEPLOY_BUCKET/source"

# The environment names places and identities only: the database login is the service
# account's own IAM token (the Cloud SQL Python Connector), DESK_SECRET a Secret Manager
# reference.
desk_env() {  # IAP_AUDIENCE: the service's environment, as --set-env-vars takes it
  local pairs=(
    "DESK_PROJECT=$PROJECT" "DESK_DATASET=$DATASET" "DESK_BUCKET=$BUCKET"
    "DESK_NOTICES_TOPIC=$NOTICES_TOPIC" "DESK_IAP_AUDIENCE=$1"
    "DESK_CLOUDSQL_INSTANCE=$CONNECTION" "DESK_DATABASE_USER=$DB_USER"
    "DESK_DATABASE=$DATABASE" "DESK_PUSH_AUDIENCE=$PUSH_AUDIENCE"
    "DESK_PUSH_SERVICE_ACCOUNT=$PUSH_SA" "DESK_MIGRATIONS=check"
  )
  local IFS=,
  printf '%s' "${pairs[*]}"
}

step "The schema: the migration job brings it to the image's latest version, as its owner"
# The same image as the services, its command replaced; --wait: the services deploy only
# once the migrations have run (the desk checks, at start, that they have).
MIGRATE_ARGS=-m,desk.migrate,--cloudsql_instance,$CONNECTION
MIGRATE_ARGS+=,--database_user,$MIGRATE_DB_USER,--database_name,$DATABASE
run gcloud run jobs deploy "$MIGRATE_JOB" --image "$IMAGE" --region "$REGION" \
  --project "$PROJECT" --service-account "$MIGRATE_SA" --command python \
  --args="$MIGRATE_ARGS" \
  --tasks 1 --max-retries 0 --task-timeout 10m --cpu 1 --memory 512Mi --execute-now --wait

step "The service: IAP on, no unauthenticated access, CPU always allocated, instances capped"
run gcloud beta run deploy "$SERVICE" --image "$IMAGE" --region "$REGION" --project "$PROJECT" \
  --service-account "$SA" --iap --no-allow-unauthenticated \
  --cpu 1 --memory 1Gi --no-cpu-throttling --min-instances 1 --max-instances "$MAX_INSTANCES" \
  --set-env-vars "$(desk_env "$AUDIENCE")" --set-secrets "DESK_SECRET=$SECRET:latest"
run gcloud beta services identity create --service iap.googleapis.com --project "$PROJECT"
retrying gcloud run services add-iam-policy-binding "$SERVICE" --region "$REGION" \
  --project "$PROJECT" --member "serviceAccount:$IAP_AGENT" --role roles/run.invoker

step "Fines pushed to the desk: a push service and a subscription on the fines topic"
if ! exists gcloud iam service-accounts describe "$PUSH_SA" --project "$PROJECT"; then
  run gcloud iam service-accounts create "$PUSH_SA_NAME" --project "$PROJECT" \
    --display-name "Section-speed fines push to the desk"
fi
# Pub/Sub push may stop working with IAP on a service (Google's IAP-on-Cloud-Run page), and
# Cloud Run's own invoker check would hand the desk the token without its signature; so
# pushes go to a second service of the same image: reachable from inside the project only
# (Pub/Sub push is), its token checked by the desk (signature, audience, the push account).
# Its IAP audience is its own, which IAP never issues: nobody opens the officers' pages there.
run gcloud run deploy "$PUSH_SERVICE" --image "$IMAGE" --region "$REGION" \
  --project "$PROJECT" --service-account "$SA" --ingress internal --no-invoker-iam-check \
  --cpu 1 --memory 1Gi --no-cpu-throttling --min-instances 0 --max-instances 1 \
  --set-env-vars "$(desk_env "$PUSH_SERVICE_AUDIENCE")" \
  --set-secrets "DESK_SECRET=$SECRET:latest"
retrying gcloud run services add-iam-policy-binding "$PUSH_SERVICE" --region "$REGION" \
  --project "$PROJECT" --member "serviceAccount:$PUSH_SA" --role roles/run.invoker
# Pub/Sub mints the push account's tokens (needed for projects made before April 2021).
retrying gcloud iam service-accounts add-iam-policy-binding "$PUSH_SA" --project "$PROJECT" \
  --member "serviceAccount:$PUBSUB_AGENT" --role roles/iam.serviceAccountTokenCreator
if ! exists gcloud pubsub subscriptions describe "$SUBSCRIPTION" --project "$PROJECT"; then
  run gcloud pubsub subscriptions create "$SUBSCRIPTION" --project "$PROJECT" \
    --topic "$FINES_TOPIC" --push-endpoint "$PUSH_AUDIENCE" \
    --push-auth-service-account "$PUSH_SA" --push-auth-token-audience "$PUSH_AUDIENCE" \
    --ack-deadline 60 --min-retry-delay 10s --max-retry-delay 600s \
    --message-retention-duration 7d
fi

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
