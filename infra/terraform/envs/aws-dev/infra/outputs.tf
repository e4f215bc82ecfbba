# Read by ../platform through terraform_remote_state; keep names stable.

output "region" {
  description = "AWS region."
  value       = var.region
}

output "cluster_name" {
  description = "EKS cluster name."
  value       = module.eks.cluster_name
}

output "vpc_cidr_block" {
  description = "VPC CIDR (internal load balancers accept it)."
  value       = module.network.vpc_cidr_block
}

output "bucket_names" {
  description = "Bucket names by purpose: pipeline_root, data, feast_offline, mlflow_artifacts."
  value       = module.storage.bucket_names
}

output "mlflow_db" {
  description = "MLflow PostgreSQL endpoint and the Secrets Manager secret RDS manages for it."
  value = {
    host       = module.mlflow_db.address
    port       = module.mlflow_db.port
    name       = module.mlflow_db.database_name
    secret_arn = module.mlflow_db.master_user_secret_arn
  }
}

output "redis" {
  description = "Feast online store endpoint (TLS) and the secret holding its AUTH token."
  value = {
    host                  = module.feast_online.primary_endpoint
    port                  = module.feast_online.port
    tls                   = module.feast_online.tls
    auth_token_secret_arn = module.feast_online.auth_token_secret_arn
  }
}

output "service_accounts" {
  description = "Kubernetes service accounts with their IRSA role ARNs, by workload."
  value       = module.workload_iam.service_accounts
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler."
  value       = module.workload_iam.cluster_autoscaler_role_arn
}

output "gpu_node_selector" {
  description = "Node selector of the GPU node group."
  value       = module.eks.gpu_node_selector
}

output "gpu_toleration" {
  description = "Toleration of the GPU node group's taint."
  value       = module.eks.gpu_toleration
}

output "update_kubeconfig_command" {
  description = "Command that points kubectl at the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "image_repositories" {
  description = "ECR repository URL by image name (kfops, kfops-gpu, kfops-serving); `kfops build --push` pushes there."
  value       = module.images.repository_urls
}
