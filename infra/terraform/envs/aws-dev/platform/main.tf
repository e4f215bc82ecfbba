# aws-dev, layer 2 of 2: in-cluster platform. The cluster comes from the infra root's state and
# an EKS data source, never from a resource in this apply, so the Kubernetes providers are
# configured from values that exist at plan time.

data "terraform_remote_state" "infra" {
  backend = "s3"
  config = {
    bucket = var.infra_state_bucket
    key    = var.infra_state_key
    region = var.infra_state_region
  }
}

locals {
  infra        = data.terraform_remote_state.infra.outputs
  region       = local.infra.region
  cluster_name = local.infra.cluster_name
  buckets      = local.infra.bucket_names
  # Exec auth: short-lived tokens, nothing long-lived in state.
  kube_exec = {
    api_version = "client.authentication.k8s.io/v1beta1"
    command     = "aws"
    args        = ["eks", "get-token", "--cluster-name", local.cluster_name, "--region", local.region]
  }
}

provider "aws" {
  region = local.region
}

data "aws_eks_cluster" "this" {
  name = local.cluster_name
}

provider "kubernetes" {
  host                   = data.aws_eks_cluster.this.endpoint
  cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)

  exec {
    api_version = local.kube_exec.api_version
    command     = local.kube_exec.command
    args        = local.kube_exec.args
  }
}

provider "helm" {
  kubernetes = {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    exec                   = local.kube_exec
  }
}

provider "kustomization" {
  kubeconfig_raw = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    "current-context" = "eks"
    clusters = [{
      name = "eks"
      cluster = {
        server                       = data.aws_eks_cluster.this.endpoint
        "certificate-authority-data" = data.aws_eks_cluster.this.certificate_authority[0].data
      }
    }]
    contexts = [{ name = "eks", context = { cluster = "eks", user = "eks" } }]
    users = [{
      name = "eks"
      user = {
        exec = {
          apiVersion = local.kube_exec.api_version
          command    = local.kube_exec.command
          args       = local.kube_exec.args
        }
      }
    }]
  })
}

module "platform" {
  source = "../../../modules/platform"

  service_accounts = {
    for workload, account in local.infra.service_accounts : workload => {
      namespace   = account.namespace
      name        = account.name
      annotations = { "eks.amazonaws.com/role-arn" = account.role_arn }
    }
  }

  gpu_node_selector = local.infra.gpu_node_selector
  gpu_toleration    = local.infra.gpu_toleration
  pipeline_root     = "s3://${local.buckets["pipeline_root"]}/pipeline-root"

  # Launcher credentials from the pod's IRSA environment, not from a static key.
  kfp_object_store_providers = {
    s3 = {
      default = {
        endpoint       = "s3.${local.region}.amazonaws.com"
        region         = local.region
        disableSSL     = false
        forcePathStyle = false
        credentials    = { fromEnv = true }
      }
    }
  }

  # Internal NLB: reachable from the VPC (and listed CIDRs via VPN/peering), never the internet.
  kfp_endpoint_service_annotations = {
    "service.beta.kubernetes.io/aws-load-balancer-type"     = "nlb"
    "service.beta.kubernetes.io/aws-load-balancer-internal" = "true"
  }
  kfp_endpoint_allowed_cidrs = concat([local.infra.vpc_cidr_block], var.kfp_endpoint_allowed_cidrs)

  mlflow_database = {
    host              = local.infra.mlflow_db.host
    port              = local.infra.mlflow_db.port
    name              = local.infra.mlflow_db.name
    secret_remote_key = local.infra.mlflow_db.secret_arn
  }
  mlflow_artifact_root         = "s3://${local.buckets["mlflow_artifacts"]}/"
  redis_auth_secret_remote_key = local.infra.redis.auth_token_secret_arn
  redis_endpoint = {
    host = local.infra.redis.host
    port = local.infra.redis.port
    tls  = local.infra.redis.tls
  }
  serving_namespace = local.infra.service_accounts["kserve"].namespace

  secret_store_provider = {
    aws = {
      service = "SecretsManager"
      region  = local.region
    }
  }

  default_storage_class = {
    name        = "gp3-encrypted"
    provisioner = "ebs.csi.aws.com"
    parameters  = { type = "gp3", encrypted = "true" }
  }

  cluster_autoscaler_values = {
    cloudProvider = "aws"
    awsRegion     = local.region
    autoDiscovery = { clusterName = local.cluster_name }
    rbac = {
      serviceAccount = {
        create      = true
        name        = "cluster-autoscaler"
        annotations = { "eks.amazonaws.com/role-arn" = local.infra.cluster_autoscaler_role_arn }
      }
    }
    extraArgs = {
      "balance-similar-node-groups" = true
      "skip-nodes-with-system-pods" = false
      "expander"                    = "least-waste"
      "scale-down-unneeded-time"    = "5m"
      "scale-down-delay-after-add"  = "5m"
    }
  }
}
