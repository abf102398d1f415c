#!/usr/bin/env bash
# Once per AWS account: a private, versioned bucket, the cluster's security group, and two instance profiles with
# least privilege (policies in this folder). Run from the repository root:
#
#   BUCKET=your-bucket REGION=us-east-1 ADMIN_CIDR=203.0.113.7/32 bash cluster/iam/aws.sh
#
# Who may write what in s3://$BUCKET/orca-ray/<sweep>/ (see "Security model" in the README):
#   head (orca-ray-head)     everything: driver state (tuner.pkl, experiment/searcher/callback state, error.pkl),
#                            Parquet results, checkpoint clean-up; launches and ends only instances tagged
#                            ray-cluster-name=orca-ray; may pass only the worker role.
#   workers (orca-ray-worker) read the data and the sweep; write only <sweep>/<trial>/checkpoint_*/ (and the empty
#                            directory markers pyarrow creates): never driver state, so a compromised worker
#                            cannot plant what the head unpickles on resume.
#   nobody on the cluster    writes nb360/ (you stage it with `python -m orca_ray.data stage`).
# Versioning keeps every overwritten or deleted object recoverable.
set -euo pipefail
: "${BUCKET:?set BUCKET}" "${REGION:?set REGION}" "${ADMIN_CIDR:?set ADMIN_CIDR (the address you SSH from)}"
HERE=$(cd "$(dirname "$0")" && pwd)
ACCOUNT=$(aws sts get-caller-identity --query Account --output text)

aws s3 mb "s3://$BUCKET" --region "$REGION"
aws s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
  BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
aws s3api put-bucket-versioning --bucket "$BUCKET" --versioning-configuration Status=Enabled

# Security group: SSH from you, everything between cluster nodes, nothing else (no 8265/6379/10001).
VPC=$(aws ec2 describe-vpcs --region "$REGION" --filters Name=isDefault,Values=true --query 'Vpcs[0].VpcId' --output text)
SG=$(aws ec2 create-security-group --region "$REGION" --group-name orca-ray --description "orca-ray nodes" \
     --vpc-id "$VPC" --query GroupId --output text)
aws ec2 authorize-security-group-ingress --region "$REGION" --group-id "$SG" --protocol tcp --port 22 --cidr "$ADMIN_CIDR"
aws ec2 authorize-security-group-ingress --region "$REGION" --group-id "$SG" --protocol -1 --source-group "$SG"

fill() {  # a policy file with this account's values
  sed -e "s|\${BUCKET}|$BUCKET|g" -e "s|\${ACCOUNT}|$ACCOUNT|g" -e "s|\${REGION}|$REGION|g" \
      -e "s|\${SECURITY_GROUP}|$SG|g" "$HERE/$1"
}
TRUST='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'
for role in orca-ray-head orca-ray-worker; do
  aws iam create-role --role-name "$role" --assume-role-policy-document "$TRUST"
  aws iam put-role-policy --role-name "$role" --policy-name "$role" --policy-document "$(fill "aws-${role#orca-ray-}-policy.json")"
  aws iam create-instance-profile --instance-profile-name "$role"
  aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
done

echo "cluster/cluster.yaml EDIT values:"
echo "  SecurityGroupIds: [$SG]"
echo "  head   IamInstanceProfile: arn:aws:iam::$ACCOUNT:instance-profile/orca-ray-head"
echo "  worker IamInstanceProfile: arn:aws:iam::$ACCOUNT:instance-profile/orca-ray-worker"
echo "  ImageId: $(aws ssm get-parameter --region "$REGION" --query Parameter.Value --output text \
  --name /aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id)"
