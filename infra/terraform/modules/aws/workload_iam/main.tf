# IRSA roles: one IAM role per Kubernetes service account, least privilege on the kfops buckets,
# their KMS keys and the secrets a workload needs. Nothing here is granted to nodes.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  issuer_host = replace(var.oidc_issuer_url, "https://", "")
  partition   = data.aws_partition.current.partition
  account_id  = data.aws_caller_identity.current.account_id
}

data "aws_iam_policy_document" "trust" {
  for_each = var.workloads

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host}:sub"
      values   = ["system:serviceaccount:${each.value.namespace}:${each.value.service_account}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "workload" {
  for_each = var.workloads

  name                 = "${var.cluster_name}-${replace(each.key, "_", "-")}"
  description          = "IRSA role of ${each.value.namespace}/${each.value.service_account}"
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
  tags                 = merge(var.tags, { "kfops.io/workload" = each.key })
}

data "aws_iam_policy_document" "access" {
  for_each = var.workloads

  dynamic "statement" {
    for_each = length(concat(each.value.read_bucket_arns, each.value.write_bucket_arns)) > 0 ? [1] : []
    content {
      sid       = "ListBuckets"
      actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
      resources = distinct(concat(each.value.read_bucket_arns, each.value.write_bucket_arns))
    }
  }

  dynamic "statement" {
    for_each = length(concat(each.value.read_bucket_arns, each.value.write_bucket_arns)) > 0 ? [1] : []
    content {
      sid       = "ReadObjects"
      actions   = ["s3:GetObject", "s3:GetObjectVersion"]
      resources = [for arn in distinct(concat(each.value.read_bucket_arns, each.value.write_bucket_arns)) : "${arn}/*"]
    }
  }

  dynamic "statement" {
    for_each = length(each.value.write_bucket_arns) > 0 ? [1] : []
    content {
      sid = "WriteObjects"
      actions = [
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
      ]
      resources = [for arn in each.value.write_bucket_arns : "${arn}/*"]
    }
  }

  dynamic "statement" {
    for_each = length(each.value.kms_key_arns) > 0 ? [1] : []
    content {
      sid = "UseKeys"
      actions = concat(
        ["kms:Decrypt", "kms:DescribeKey"],
        length(each.value.write_bucket_arns) > 0 ? ["kms:GenerateDataKey"] : [],
      )
      resources = each.value.kms_key_arns
    }
  }

  dynamic "statement" {
    for_each = length(each.value.secret_arns) > 0 ? [1] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
      resources = each.value.secret_arns
    }
  }
}

resource "aws_iam_role_policy" "workload" {
  for_each = var.workloads

  name   = "kfops-access"
  role   = aws_iam_role.workload[each.key].id
  policy = data.aws_iam_policy_document.access[each.key].json
}

# --- Cluster autoscaler ---------------------------------------------------------------------------

data "aws_iam_policy_document" "autoscaler_trust" {
  count = var.cluster_autoscaler_service_account == null ? 0 : 1

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host}:sub"
      values   = ["system:serviceaccount:${var.cluster_autoscaler_service_account.namespace}:${var.cluster_autoscaler_service_account.name}"]
    }
    condition {
      test     = "StringEquals"
      variable = "${local.issuer_host}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster_autoscaler" {
  count = var.cluster_autoscaler_service_account == null ? 0 : 1

  name               = "${var.cluster_name}-cluster-autoscaler"
  description        = "IRSA role of the cluster autoscaler"
  assume_role_policy = data.aws_iam_policy_document.autoscaler_trust[0].json
  tags               = var.tags
}

data "aws_iam_policy_document" "autoscaler" {
  count = var.cluster_autoscaler_service_account == null ? 0 : 1

  # Describe calls take no resource-level permissions.
  statement {
    sid = "Discover"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }

  # Labels and taints of a node group at zero size come from the EKS API.
  statement {
    sid       = "DescribeNodegroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:*:${local.account_id}:nodegroup/${var.cluster_name}/*/*"]
  }

  # Scaling only the groups tagged as owned by this cluster.
  statement {
    sid = "ScaleOwnedGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${local.partition}:autoscaling:*:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/*"]
    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  count = var.cluster_autoscaler_service_account == null ? 0 : 1

  name   = "scale-node-groups"
  role   = aws_iam_role.cluster_autoscaler[0].id
  policy = data.aws_iam_policy_document.autoscaler[0].json
}
