# The kfops CLI contract: `terraform output -json > outputs.json` here, then
# `kfops config from-terraform outputs.json`. kfops/cluster/terraform_outputs.py names the
# outputs it needs (REQUIRED_OUTPUTS); tests/infra checks they all exist here.

output "region" {
  description = "AWS region."
  value       = local.region
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = local.cluster_name
}

output "update_kubeconfig_command" {
  description = "Command that points kubectl at the cluster."
  value       = local.infra.update_kubeconfig_command
}

output "kfp_endpoint" {
  description = "KFP API/UI endpoint (internal load balancer) for kfp.Client(host=...)."
  value       = module.platform.kfp_endpoint
}

output "kfp_namespace" {
  description = "Namespace pipelines run in."
  value       = module.platform.kfp_namespace
}

output "pipeline_root" {
  description = "Default pipeline root for KFP artifacts."
  value       = "s3://${local.buckets["pipeline_root"]}/pipeline-root"
}

output "mlflow_tracking_uri" {
  description = "MLflow tracking URI (in-cluster)."
  value       = module.platform.mlflow_tracking_uri
}

output "mlflow_artifact_location" {
  description = "Artifact root for new MLflow experiments."
  value       = "s3://${local.buckets["mlflow_artifacts"]}/"
}

output "buckets" {
  description = "Bucket names by purpose: pipeline_root, data, feast_offline, mlflow_artifacts."
  value       = local.buckets
}

output "feast_registry" {
  description = "Feast registry location."
  value       = "s3://${local.buckets["feast_offline"]}/registry/registry.db"
}

output "redis" {
  description = "Feast online store: host, port, tls, and where the AUTH token lives (cloud secret, Kubernetes Secret)."
  value = {
    host                  = local.infra.redis.host
    port                  = local.infra.redis.port
    tls                   = local.infra.redis.tls
    auth_token_secret_arn = local.infra.redis.auth_token_secret_arn
    auth_k8s_secret       = module.platform.redis_auth_secret
  }
}

output "gpu_node_selector" {
  description = "Node selector that puts a task on a GPU node."
  value       = local.infra.gpu_node_selector
}

output "gpu_toleration" {
  description = "Toleration a GPU task needs (Kubernetes spelling)."
  value       = local.infra.gpu_toleration
}

output "service_accounts" {
  description = "Kubernetes service accounts (namespace, name, role_arn) by workload."
  value       = local.infra.service_accounts
}

output "serving_namespace" {
  description = "Namespace of kfops InferenceServices."
  value       = module.platform.serving_namespace
}

output "platform_versions" {
  description = "Pinned versions installed by the platform module."
  value       = module.platform.versions
}

output "images" {
  description = "Images kfops runs on this cluster (cluster.image, cluster.gpu_image, cluster.serving_image): the ECR repositories at var.image_tag."
  value = {
    cpu     = "${local.infra.image_repositories["kfops"]}:${var.image_tag}"
    gpu     = "${local.infra.image_repositories["kfops-gpu"]}:${var.image_tag}"
    serving = "${local.infra.image_repositories["kfops-serving"]}:${var.image_tag}"
  }
}
