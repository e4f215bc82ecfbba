# aws-dev, layer 1 of 2: cloud resources only (no Kubernetes provider here). The platform root
# (../platform) reads this state and installs the in-cluster components.

data "aws_caller_identity" "current" {}

locals {
  tags = merge(var.tags, {
    "kfops.io/environment" = var.name
    "managed-by"           = "terraform"
  })
  # Globally unique bucket prefix without hard-coding an account id.
  bucket_prefix = "${var.name}-${data.aws_caller_identity.current.account_id}"

  # Service accounts that get cloud identities. The platform root creates or annotates them.
  service_accounts = {
    pipeline_runner  = { namespace = var.kfp_namespace, name = "pipeline-runner" }
    mlflow           = { namespace = "mlflow", name = "mlflow" }
    kserve           = { namespace = var.serving_namespace, name = "kfops-inference" }
    log_sink         = { namespace = var.serving_namespace, name = "kfops-log-sink" }
    feast            = { namespace = var.kfp_namespace, name = "feast" }
    external_secrets = { namespace = "external-secrets", name = "external-secrets" }
  }
}

# One key for every CloudWatch log group of the environment.
module "logs_key" {
  source = "../../../modules/aws/kms_key"

  alias               = "${var.name}-logs"
  description         = "${var.name}: CloudWatch log groups"
  logs_service_region = var.region
}

module "network" {
  source = "../../../modules/aws/network"

  name               = var.name
  cidr_block         = var.vpc_cidr
  availability_zones = var.availability_zones
  cluster_name       = var.name
  single_nat_gateway = var.single_nat_gateway
  kms_key_arn        = module.logs_key.arn
  tags               = local.tags
}

module "eks" {
  source = "../../../modules/aws/eks"

  cluster_name           = var.name
  kubernetes_version     = var.kubernetes_version
  vpc_id                 = module.network.vpc_id
  private_subnet_ids     = module.network.private_subnet_ids
  endpoint_public_access = var.endpoint_public_access
  public_access_cidrs    = var.public_access_cidrs
  logs_kms_key_arn       = module.logs_key.arn
  admin_principal_arns   = var.admin_principal_arns
  cluster_log_types      = var.cluster_log_types
  cpu_instance_types     = var.cpu_instance_types
  cpu_min_size           = var.cpu_min_size
  cpu_desired_size       = var.cpu_min_size
  gpu_instance_types     = var.gpu_instance_types
  gpu_max_size           = var.gpu_max_size
  tags                   = local.tags
}

module "images" {
  source = "../../../modules/aws/ecr"

  name_prefix  = var.name
  force_delete = var.force_destroy_buckets
  tags         = local.tags
}

module "storage" {
  source = "../../../modules/aws/storage"

  name_prefix   = local.bucket_prefix
  force_destroy = var.force_destroy_buckets
  tags          = local.tags
}

module "mlflow_db" {
  source = "../../../modules/aws/mlflow_db"

  identifier              = "${var.name}-mlflow"
  vpc_id                  = module.network.vpc_id
  private_subnet_ids      = module.network.private_subnet_ids
  allowed_security_groups = { eks_cluster = module.eks.cluster_security_group_id }
  multi_az                = var.db_multi_az
  deletion_protection     = var.deletion_protection
  logs_kms_key_arn        = module.logs_key.arn
  tags                    = local.tags
}

module "feast_online" {
  source = "../../../modules/aws/feast_online"

  name                    = "${var.name}-feast"
  vpc_id                  = module.network.vpc_id
  private_subnet_ids      = module.network.private_subnet_ids
  allowed_security_groups = { eks_cluster = module.eks.cluster_security_group_id }
  replicas                = var.redis_replicas
  logs_kms_key_arn        = module.logs_key.arn
  tags                    = local.tags
}

module "workload_iam" {
  source = "../../../modules/aws/workload_iam"

  cluster_name      = module.eks.cluster_name
  oidc_provider_arn = module.eks.oidc_provider_arn
  oidc_issuer_url   = module.eks.oidc_issuer_url
  tags              = local.tags

  workloads = {
    # Pipeline steps: read/write every kfops bucket (raw data, features, artifacts, models).
    pipeline_runner = {
      namespace       = local.service_accounts.pipeline_runner.namespace
      service_account = local.service_accounts.pipeline_runner.name
      write_bucket_arns = [
        module.storage.bucket_arns["pipeline_root"],
        module.storage.bucket_arns["data"],
        module.storage.bucket_arns["feast_offline"],
        module.storage.bucket_arns["mlflow_artifacts"],
      ]
      kms_key_arns = [module.storage.kms_key_arn]
    }
    # Tracking server: its artifact bucket only (listing, deleting runs' artifacts).
    mlflow = {
      namespace         = local.service_accounts.mlflow.namespace
      service_account   = local.service_accounts.mlflow.name
      write_bucket_arns = [module.storage.bucket_arns["mlflow_artifacts"]]
      kms_key_arns      = [module.storage.kms_key_arn]
    }
    # Inference pods: read model artifacts, nothing else.
    kserve = {
      namespace        = local.service_accounts.kserve.namespace
      service_account  = local.service_accounts.kserve.name
      read_bucket_arns = [module.storage.bucket_arns["mlflow_artifacts"]]
      kms_key_arns     = [module.storage.kms_key_arn]
    }
    # kfops' inference-log sink (serving.kserve.log_sink): writes the inference log, which lives
    # in the data bucket under the state prefix (<state.store>/<project>/inference_logs).
    log_sink = {
      namespace         = local.service_accounts.log_sink.namespace
      service_account   = local.service_accounts.log_sink.name
      write_bucket_arns = [module.storage.bucket_arns["data"]]
      kms_key_arns      = [module.storage.kms_key_arn]
    }
    # Feast materialisation: write the offline store and registry, read raw data.
    feast = {
      namespace         = local.service_accounts.feast.namespace
      service_account   = local.service_accounts.feast.name
      read_bucket_arns  = [module.storage.bucket_arns["data"]]
      write_bucket_arns = [module.storage.bucket_arns["feast_offline"]]
      kms_key_arns      = [module.storage.kms_key_arn]
    }
    # External Secrets: the two secrets the cluster needs, nothing else.
    external_secrets = {
      namespace       = local.service_accounts.external_secrets.namespace
      service_account = local.service_accounts.external_secrets.name
      secret_arns = [
        module.mlflow_db.master_user_secret_arn,
        module.feast_online.auth_token_secret_arn,
      ]
      kms_key_arns = [module.mlflow_db.kms_key_arn, module.feast_online.kms_key_arn]
    }
  }
}
