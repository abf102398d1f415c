#!/usr/bin/env bash
# Once per GCP project: a private, versioned bucket, the cluster's VPC and firewall, and two service accounts
# with least privilege. Run from the repository root:
#
#   PROJECT=your-gcp-project REGION=us-central1 BUCKET=your-bucket ADMIN_CIDR=203.0.113.7/32 bash cluster/iam/gcp.sh
#
#   head (orca-ray-head)      creates/deletes VMs (roles/compute.instanceAdmin.v1: no firewall, network or IAM
#                             rights), may start VMs only as the worker account, full object rights on the bucket
#                             only (driver state, Parquet, checkpoint clean-up).
#   workers (orca-ray-worker) read the bucket; write only <sweep>/<trial>/checkpoint_*/ (and directory markers)
#                             under orca-ray/, never driver state.
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BUCKET:?set BUCKET}" "${ADMIN_CIDR:?set ADMIN_CIDR}"
HEAD=orca-ray-head@$PROJECT.iam.gserviceaccount.com
WORKER=orca-ray-worker@$PROJECT.iam.gserviceaccount.com
gcloud config set project "$PROJECT"

gcloud storage buckets create "gs://$BUCKET" --location="$REGION" --uniform-bucket-level-access \
  --public-access-prevention
gcloud storage buckets update "gs://$BUCKET" --versioning

# The VPC keeps the nodes out of the `default` network, whose default-allow-ssh rule is open to the world.
gcloud compute networks create orca-ray --subnet-mode=custom
gcloud compute networks subnets create orca-ray --network=orca-ray --region="$REGION" --range=10.40.0.0/20
gcloud compute firewall-rules create orca-ray-ssh --network=orca-ray --allow=tcp:22 \
  --source-ranges="$ADMIN_CIDR" --target-tags=orca-ray
gcloud compute firewall-rules create orca-ray-internal --network=orca-ray --allow=tcp,udp,icmp \
  --source-tags=orca-ray --target-tags=orca-ray

gcloud iam service-accounts create orca-ray-head --display-name="orca-ray head (driver, autoscaler)"
gcloud iam service-accounts create orca-ray-worker --display-name="orca-ray GPU workers (trials)"

# Head: manage instances in the project, use the cluster's subnet, act as the worker account and nothing else.
gcloud projects add-iam-policy-binding "$PROJECT" --member="serviceAccount:$HEAD" \
  --role=roles/compute.instanceAdmin.v1 --condition=None
gcloud compute networks subnets add-iam-policy-binding orca-ray --region="$REGION" \
  --member="serviceAccount:$HEAD" --role=roles/compute.networkUser
gcloud iam service-accounts add-iam-policy-binding "$WORKER" --member="serviceAccount:$HEAD" \
  --role=roles/iam.serviceAccountUser
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$HEAD" \
  --role=roles/storage.objectAdmin

# Workers: read everything in the bucket; create/replace objects only in trial checkpoint folders.
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$WORKER" \
  --role=roles/storage.objectViewer
WORKER_WRITES="resource.name.startsWith(\"projects/_/buckets/$BUCKET/objects/orca-ray/\") && (resource.name.extract(\"/objects/orca-ray/{trial}/checkpoint_\") != \"\" || resource.name.endsWith(\"/\"))"
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member="serviceAccount:$WORKER" \
  --role=roles/storage.objectUser --condition="expression=$WORKER_WRITES,title=trial-checkpoints-only"

# Ray 2.60's `ray up` on GCP always creates ray-autoscaler-sa-v1 and grants it project-wide compute/storage admin,
# even when (as in cluster/gcp.yaml) every node runs as its own account. No node uses it: after the first
# `ray up`, disable it so nobody can act as it:
#   gcloud iam service-accounts disable ray-autoscaler-sa-v1@$PROJECT.iam.gserviceaccount.com
echo "cluster/gcp.yaml EDIT values: head $HEAD, workers $WORKER, subnetwork projects/$PROJECT/regions/$REGION/subnetworks/orca-ray"
